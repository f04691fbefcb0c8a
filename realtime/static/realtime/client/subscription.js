// One topic subscription: remembers the last seq delivered, drops duplicates, and publishes.
export class Subscription {
  constructor(consumer, topic, { onMessage, onError, onSubscribed, onReset } = {}) {
    this.consumer = consumer;
    this.topic = topic;
    this.onMessage = onMessage ?? (() => {});
    this.onError = onError ?? (() => {});
    this.onSubscribed = onSubscribed ?? (() => {});
    this.onReset = onReset ?? (() => {});
    this.lastSeq = null; // the seq of the last message delivered to the application
    this.active = true;
  }

  // The subscribe frame for a (re)connect: resume after the last seq delivered.
  subscribeFrame(id) {
    const frame = { type: "subscribe", topic: this.topic, id };
    if (this.lastSeq !== null) frame.since = this.lastSeq;
    return frame;
  }

  handleSubscribed(frame) {
    // The server's history is shorter than ours (e.g. a reset database): start again.
    if (this.lastSeq !== null && frame.seq < this.lastSeq) {
      this.lastSeq = null;
      this.onReset(frame);
    }
    this.onSubscribed(frame);
  }

  // Deliver a message once, in order: anything at or below the last seq is a duplicate.
  handleMessage(frame) {
    if (this.lastSeq !== null && frame.seq <= this.lastSeq) return false;
    this.lastSeq = frame.seq;
    this.onMessage(frame.data, frame);
    return true;
  }

  // Publish data to this topic, exactly once (an idempotency key, sent again after a
  // reconnect): resolved with the `published` frame, rejected on `error`.
  publish(data) {
    return this.consumer.publish(this.topic, data);
  }

  unsubscribe() {
    this.consumer.subscriptions.remove(this);
  }
}

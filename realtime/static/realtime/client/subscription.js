// One topic subscription: remembers the last seq delivered, drops duplicates, publishes,
// whispers, and (with `presence: true`) keeps `presence`, who is here: members by user id and
// the count of connections, with "join", "leave" and "presence" events.
export class Subscription {
  constructor(
    consumer,
    topic,
    { onMessage, onError, onSubscribed, onReset, onPresence, onWhisper, presence = false } = {},
  ) {
    this.consumer = consumer;
    this.topic = topic;
    this.onMessage = onMessage ?? (() => {});
    this.onError = onError ?? (() => {});
    this.onSubscribed = onSubscribed ?? (() => {});
    this.onReset = onReset ?? (() => {});
    this.onPresence = onPresence ?? (() => {});
    this.onWhisper = onWhisper ?? (() => {});
    this.wantsPresence = presence;
    // Who is here (with `presence: true`): null until the server's first presence frame.
    this.presence = null;
    this.listeners = new Map();
    this.lastSeq = null; // the seq of the last message delivered to the application
    this.active = true;
  }

  // "join" (member), "leave" (member), "presence" (this.presence), "whisper" (data, from).
  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(listener);
    return () => this.listeners.get(event)?.delete(listener);
  }

  emit(event, ...args) {
    for (const listener of this.listeners.get(event) ?? []) listener(...args);
  }

  // The subscribe frame for a (re)connect: resume after the last seq delivered.
  subscribeFrame(id) {
    const frame = { type: "subscribe", topic: this.topic, id };
    if (this.lastSeq !== null) frame.since = this.lastSeq;
    if (this.wantsPresence) frame.presence = true;
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

  // The whole roster (after every subscribe): joins and leaves since the last one shown are
  // told as events, so a reconnect shows only what changed.
  handlePresence(frame) {
    const members = new Map(frame.members.map((m) => [m.user, m]));
    const before = this.presence?.members;
    this.presence = { members, count: frame.count };
    if (before) {
      for (const [user, member] of members) if (!before.has(user)) this.emit("join", member);
      for (const [user, member] of before) if (!members.has(user)) this.emit("leave", member);
    }
    this.changed();
  }

  handlePresenceDiff(frame) {
    if (!this.presence) return; // a diff before the roster: the roster that follows has it
    for (const member of frame.leaves) {
      if (this.presence.members.delete(member.user)) this.emit("leave", member);
    }
    for (const member of frame.joins) {
      if (!this.presence.members.has(member.user)) this.emit("join", member);
      this.presence.members.set(member.user, member);
    }
    this.presence.count = frame.count;
    this.changed();
  }

  changed() {
    this.onPresence(this.presence);
    this.emit("presence", this.presence);
  }

  handleWhisper(frame) {
    this.onWhisper(frame.data, frame.from);
    this.emit("whisper", frame.data, frame.from);
  }

  // Publish data to this topic, exactly once (an idempotency key, sent again after a
  // reconnect): resolved with the `published` frame, rejected on `error`.
  publish(data) {
    return this.consumer.publish(this.topic, data);
  }

  // Send data to the topic's other subscribers now, not stored (at most once): false when
  // there is no open WebSocket to carry it.
  whisper(data) {
    return this.consumer.send({ type: "whisper", topic: this.topic, data });
  }

  unsubscribe() {
    this.consumer.subscriptions.remove(this);
  }
}

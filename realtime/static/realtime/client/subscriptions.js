// The consumer's subscriptions by topic: resubscribes them all on every welcome.
import { Subscription } from "./subscription.js";

export class Subscriptions {
  constructor(consumer) {
    this.consumer = consumer;
    this.byTopic = new Map();
  }

  create(topic, callbacks) {
    if (this.byTopic.has(topic)) {
      throw new Error(`Already subscribed to ${JSON.stringify(topic)}; reuse that subscription.`);
    }
    const subscription = new Subscription(this.consumer, topic, callbacks);
    this.byTopic.set(topic, subscription);
    this.sendSubscribe(subscription);
    return subscription;
  }

  remove(subscription) {
    if (this.byTopic.get(subscription.topic) !== subscription) return;
    this.byTopic.delete(subscription.topic);
    subscription.active = false;
    this.consumer.send({ type: "unsubscribe", topic: subscription.topic });
  }

  get(topic) {
    return this.byTopic.get(topic);
  }

  resubscribeAll() {
    for (const subscription of this.byTopic.values()) this.sendSubscribe(subscription);
  }

  sendSubscribe(subscription) {
    this.consumer.send(subscription.subscribeFrame(this.consumer.nextId("sub")));
  }
}

// The Server-Sent Events transport: the consumer's fallback when WebSockets cannot be opened.
// One EventSource for every subscribed topic (/events/?topic=a&topic=b&since=a:3,b:9), opened
// again whenever the topics change; the browser itself resumes after a drop with
// Last-Event-ID. Publishing goes over HTTP (POST /api/v1/topics/<slug>/messages, the session
// and Django's CSRF cookie, the idempotency key in Idempotency-Key). Same interface as
// WebSocketTransport (websocket.js).
import { FrameType } from "./protocol.js";

export class EventStreamTransport {
  constructor(consumer, options = {}) {
    this.consumer = consumer;
    this.name = "sse";
    this.reconnectsItself = true; // the browser resumes the stream with Last-Event-ID
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.eventsPath = options.eventsPath ?? "/events/";
    this.publishPath = options.publishPath ?? ((topic) => `/api/v1/topics/${topic}/messages`);
    this.base = options.base ?? globalThis.location?.href;
    this.document = options.document ?? globalThis.document ?? null;
    this.source = null;
    this.reopenQueued = false;
  }

  get available() {
    return typeof this.EventSource === "function";
  }

  get isOpen() {
    return this.source !== null;
  }

  // The stream names its topics in its URL: a subscribe or unsubscribe opens it again with
  // the new set. Nothing else goes this way (publish: `publish`).
  send(frame) {
    if (frame.type === FrameType.SUBSCRIBE || frame.type === FrameType.UNSUBSCRIBE) {
      this.reopenSoon();
    }
    return false;
  }

  url() {
    const params = new URLSearchParams();
    const cursor = [];
    for (const subscription of this.consumer.subscriptions.byTopic.values()) {
      params.append("topic", subscription.topic);
      if (subscription.lastSeq !== null) cursor.push(`${subscription.topic}:${subscription.lastSeq}`);
    }
    if (cursor.length) params.set("since", cursor.join(","));
    const presence = [...this.consumer.subscriptions.byTopic.values()].some((s) => s.wantsPresence);
    if (presence) params.set("presence", "1");
    return new URL(`${this.eventsPath}?${params}`, this.base).toString();
  }

  open() {
    this.close();
    if (this.consumer.subscriptions.byTopic.size === 0) {
      this.consumer.live(); // nothing to receive: nothing to open
      return;
    }
    const source = new this.EventSource(this.url(), { withCredentials: true });
    this.source = source;
    const deliver = (event) => {
      if (this.source === source) this.consumer.receive(event.data);
    };
    for (const type of ["message", "subscribed", "unsubscribed", "presence", "presence_diff"]) {
      source.addEventListener(type, deliver);
    }
    source.addEventListener("error", (event) => {
      if (this.source !== source) return;
      if (event.data) {
        // The server ended the stream on purpose (its session ended): do not reconnect.
        source.close();
        this.source = null;
        this.consumer.refused(JSON.parse(event.data));
      } else {
        this.consumer.interrupted(); // the browser reconnects by itself
      }
    });
    source.onopen = () => {
      if (this.source === source) this.consumer.live();
    };
  }

  // The topics changed: open again once, after the current task (pages subscribe in loops).
  reopenSoon() {
    if (this.reopenQueued) return;
    this.reopenQueued = true;
    queueMicrotask(() => {
      this.reopenQueued = false;
      if (this.consumer.active === this && !this.consumer.stopped) this.open();
    });
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
  }

  csrfToken() {
    const cookies = this.document?.cookie ?? "";
    const found = cookies.split(";").map((c) => c.trim()).find((c) => c.startsWith("csrftoken="));
    return found ? decodeURIComponent(found.slice("csrftoken=".length)) : "";
  }

  // POST one publish; resolves with a `published`-shaped frame, rejects with the error body,
  // or with {code: "disconnected"} when the request did not get through (retried by the
  // consumer with the same key).
  async publish(frame) {
    let response;
    try {
      response = await this.fetch(new URL(this.publishPath(frame.topic), this.base).toString(), {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "X-CSRFToken": this.csrfToken(),
          "Idempotency-Key": frame.key,
        },
        body: JSON.stringify({ data: frame.data }),
      });
    } catch {
      throw { code: "disconnected", message: "The publish request did not get through." };
    }
    let body = {};
    try {
      body = await response.json();
    } catch {
      // not JSON: a proxy's page
    }
    if (response.status === 201) return { type: "published", topic: body.topic, seq: body.seq };
    if (response.status >= 500 || response.status === 429) {
      throw { code: "disconnected", message: body.message ?? `HTTP ${response.status}` };
    }
    throw { code: body.error ?? "server_error", message: body.message ?? `HTTP ${response.status}` };
  }
}

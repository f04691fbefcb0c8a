// The consumer owns the connection: a WebSocket with realtime.v1, reconnected with backoff and
// jitter (at once when the browser comes back online or the tab becomes visible); it hands
// frames to the subscriptions and matches answers to requests by id. With `transport: "auto"`
// (the default) it falls back to Server-Sent Events (event_stream.js) when a WebSocket cannot
// be opened twice in a row, and tries WebSockets again later; "websocket" and "sse" force one.
import { Backoff } from "./backoff.js";
import { ConnectionMonitor } from "./connection_monitor.js";
import { EventStreamTransport } from "./event_stream.js";
import { CloseCode, FrameType, PROTOCOL, socketUrl } from "./protocol.js";
import { Subscriptions } from "./subscriptions.js";

const OPEN = 1;

export const Status = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  OFFLINE: "offline",
  SIGNED_OUT: "signed out", // closed with 4401: stays so until the page is loaded again
});

const realClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
};

export class RealtimeError extends Error {
  constructor(frame) {
    super(frame.message ?? frame.code);
    this.name = "RealtimeError";
    this.code = frame.code;
    this.topic = frame.topic;
    this.frame = frame;
  }
}

export class Consumer {
  constructor(url = socketUrl(), options = {}) {
    this.url = url;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.clock = options.clock ?? realClock;
    this.env = options.env ?? globalThis.window ?? null;
    this.document = options.document ?? globalThis.document ?? null;
    this.protocols = options.protocols ?? [PROTOCOL];
    this.healthyAfter = options.healthyAfter ?? 10000;
    this.backoff = new Backoff({ random: options.random, ...options.backoff });
    this.monitor = new ConnectionMonitor(this, { clock: this.clock, ...options.monitor });
    this.subscriptions = new Subscriptions(this);
    this.pending = new Map(); // request id → {resolve, reject}
    this.publishes = new Map(); // idempotency key → a publish waiting for its answer
    this.publishTimeout = options.publishTimeout ?? 30000;
    this.newKey = options.newKey ?? newKey;
    this.transport = options.transport ?? "auto";
    this.mode = this.transport === "sse" ? "sse" : "websocket";
    this.events = new EventStreamTransport(this, options);
    this.failedOpens = 0; // WebSockets closed before their welcome, in a row
    this.fallbackAfter = options.fallbackAfter ?? 2;
    this.websocketRetry = options.websocketRetry ?? 60000;
    this.retryTimer = null;
    this.listeners = new Map();
    this.socket = null;
    this.status = Status.OFFLINE;
    this.welcome = null;
    this.counter = 0;
    this.reconnectTimer = null;
    this.healthyTimer = null;
    this.stopped = true;
    this.onOnline = () => this.reconnectSoon("online");
    this.onOffline = () => this.setStatus(Status.OFFLINE);
    this.onVisible = () => {
      if (this.document?.visibilityState === "visible") this.reconnectSoon("visible");
    };
  }

  // --- events: "status" (status), "frame" (frame in), "send" (frame out), "welcome" (frame)
  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(listener);
    return () => this.listeners.get(event).delete(listener);
  }

  emit(event, value) {
    for (const listener of this.listeners.get(event) ?? []) listener(value);
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.emit("status", status);
  }

  // --- connection lifecycle
  connect() {
    if (this.stopped) {
      this.stopped = false;
      this.env?.addEventListener?.("online", this.onOnline);
      this.env?.addEventListener?.("offline", this.onOffline);
      this.document?.addEventListener?.("visibilitychange", this.onVisible);
    }
    if (this.mode === "sse") {
      if (!this.events.source && this.status !== Status.LIVE) {
        if (this.status !== Status.RECONNECTING) this.setStatus(Status.CONNECTING);
        this.events.open();
      }
      return this;
    }
    if (this.socket) return this;
    this.clearReconnect();
    if (this.status !== Status.RECONNECTING) this.setStatus(Status.CONNECTING);
    const socket = new this.WebSocket(this.url, this.protocols);
    this.socket = socket;
    socket.onmessage = (event) => {
      if (this.socket === socket) this.receive(event.data);
    };
    socket.onclose = (event) => {
      if (this.socket === socket) this.closed(event);
    };
    socket.onerror = () => {};
    return this;
  }

  // Close for good (no reconnect).
  disconnect() {
    this.stopped = true;
    this.clearReconnect();
    this.env?.removeEventListener?.("online", this.onOnline);
    this.env?.removeEventListener?.("offline", this.onOffline);
    this.document?.removeEventListener?.("visibilitychange", this.onVisible);
    this.dropSocket(1000);
    this.events.close();
    if (this.retryTimer !== null) this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.setStatus(Status.OFFLINE);
  }

  // Drop the current socket and connect again after a backoff delay.
  reconnect(reason = "reconnect") {
    this.dropSocket(4000, reason);
    this.scheduleReconnect();
  }

  // The network or the tab came back: connect now unless live already.
  reconnectSoon() {
    if (this.stopped || this.status === Status.LIVE || this.mode === "sse") return;
    this.dropSocket(4000, "retry");
    this.clearReconnect();
    this.connect();
  }

  dropSocket(code, reason) {
    const socket = this.socket;
    this.socket = null;
    this.welcome = null;
    this.monitor.stop();
    if (this.healthyTimer !== null) this.clock.clearTimeout(this.healthyTimer);
    this.healthyTimer = null;
    this.rejectPending("disconnected");
    if (socket) {
      try {
        socket.close(code, reason);
      } catch {
        // already closing
      }
    }
  }

  closed(event) {
    const welcomed = this.welcome !== null;
    this.emit("close", event);
    this.dropSocket();
    if (this.stopped) return;
    if (event.code === CloseCode.UNAUTHORIZED) {
      this.signedOut();
      return;
    }
    this.failedOpens = welcomed ? 0 : this.failedOpens + 1;
    const fallback = this.transport === "auto" && this.events.available;
    if (fallback && this.failedOpens >= this.fallbackAfter) {
      this.useEventStream();
      return;
    }
    this.scheduleReconnect();
  }

  // --- the Server-Sent Events fallback
  useEventStream() {
    this.mode = "sse";
    this.clearReconnect();
    this.emit("transport", "sse");
    this.events.open();
    this.retryTimer = this.clock.setTimeout(() => this.tryWebSocketAgain(), this.websocketRetry);
  }

  tryWebSocketAgain() {
    this.retryTimer = null;
    if (this.stopped || this.mode !== "sse") return;
    this.mode = "websocket";
    this.failedOpens = 0;
    this.events.close();
    this.emit("transport", "websocket");
    this.setStatus(Status.RECONNECTING);
    this.connect();
  }

  streamOpened() {
    this.setStatus(Status.LIVE);
    for (const entry of this.publishes.values()) if (!entry.inflight) this.sendPublish(entry);
  }

  streamInterrupted() {
    this.setStatus(Status.RECONNECTING);
  }

  streamRefused(body) {
    this.emit("refused", body);
    if (body?.error === "unauthorized") {
      this.signedOut();
      return;
    }
    this.setStatus(Status.OFFLINE);
  }

  // The server ended the user's session (4401, or the event stream's "unauthorized"):
  // reconnecting would only connect as someone else (anonymous), so stop until a new page
  // load, and say so.
  signedOut() {
    this.disconnect();
    this.setStatus(Status.SIGNED_OUT);
    this.emit("signedout");
  }

  scheduleReconnect() {
    if (this.stopped || this.reconnectTimer !== null) return;
    if (this.status !== Status.OFFLINE) this.setStatus(Status.RECONNECTING);
    const delay = this.backoff.next();
    this.emit("reconnecting", delay);
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  clearReconnect() {
    if (this.reconnectTimer !== null) this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  // --- frames
  send(frame) {
    if (this.mode === "sse") {
      // The event stream names its topics in its URL: open it again with the new set.
      if (frame.type === FrameType.SUBSCRIBE || frame.type === FrameType.UNSUBSCRIBE) {
        this.events.reopenSoon();
      }
      return false;
    }
    if (!this.socket || this.socket.readyState !== OPEN || !this.welcome) return false;
    const text = JSON.stringify(frame);
    this.socket.send(text);
    this.emit("send", frame);
    return true;
  }

  nextId(prefix) {
    this.counter += 1;
    return `${prefix}-${this.counter}`;
  }

  // Send a frame with a fresh id; resolve with the answer, reject with an `error` frame.
  request(frame) {
    return new Promise((resolve, reject) => {
      const id = this.nextId(frame.type);
      if (!this.send({ ...frame, id })) {
        reject(new RealtimeError({ code: "disconnected", message: "Not connected." }));
        return;
      }
      this.pending.set(id, { resolve, reject });
    });
  }

  // Publish `data` to `topic` exactly once: the frame carries an idempotency key, and when
  // the socket drops before the answer it is sent again, with the same key, once the
  // connection is back (the server answers a repeated key with the first publish's seq).
  // Resolves with `published`; rejects with an `error` frame, or `disconnected` after
  // `publishTimeout` ms without an answer.
  publish(topic, data) {
    return new Promise((resolve, reject) => {
      const key = this.newKey();
      const entry = { frame: { type: FrameType.PUBLISH, topic, data, key }, resolve, reject };
      entry.timer = this.clock.setTimeout(() => {
        this.publishes.delete(key);
        reject(new RealtimeError({ code: "disconnected", message: "No answer to the publish." }));
      }, this.publishTimeout);
      this.publishes.set(key, entry);
      this.sendPublish(entry);
    });
  }

  sendPublish(entry) {
    if (this.mode === "sse") {
      this.sendPublishOverHttp(entry);
      return;
    }
    const id = this.nextId("publish");
    if (!this.send({ ...entry.frame, id })) return; // sent again once welcomed
    const finish = () => {
      this.clock.clearTimeout(entry.timer);
      this.publishes.delete(entry.frame.key);
    };
    this.pending.set(id, {
      resolve: (frame) => {
        finish();
        entry.resolve(frame);
      },
      reject: (error) => {
        if (error.code === "disconnected") return; // kept: sent again after reconnecting
        finish();
        entry.reject(error);
      },
    });
  }

  sendPublishOverHttp(entry) {
    entry.inflight = true;
    this.events.publish(entry.frame).then(
      (frame) => {
        this.clock.clearTimeout(entry.timer);
        this.publishes.delete(entry.frame.key);
        entry.resolve(frame);
      },
      (error) => {
        entry.inflight = false;
        if (!this.publishes.has(entry.frame.key)) return; // timed out meanwhile
        if (error.code === "disconnected") {
          // Sent again (same key) in a moment, or over the socket once it is back.
          this.clock.setTimeout(() => {
            if (this.publishes.has(entry.frame.key) && !entry.inflight) this.sendPublish(entry);
          }, 1000);
          return;
        }
        this.clock.clearTimeout(entry.timer);
        this.publishes.delete(entry.frame.key);
        entry.reject(new RealtimeError(error));
      },
    );
  }

  ping() {
    return this.send({ type: FrameType.PING, id: this.nextId("ping") });
  }

  rejectPending(code) {
    for (const { reject } of this.pending.values()) {
      reject(new RealtimeError({ code, message: "The connection closed before an answer." }));
    }
    this.pending.clear();
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    this.monitor.recordFrame();
    this.emit("frame", frame);
    const waiting = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    if (waiting) this.pending.delete(frame.id);
    const subscription = frame.topic !== undefined ? this.subscriptions.get(frame.topic) : null;
    switch (frame.type) {
      case FrameType.WELCOME:
        this.welcomed(frame);
        break;
      case FrameType.MESSAGE:
        subscription?.handleMessage(frame);
        break;
      case FrameType.SUBSCRIBED:
        subscription?.handleSubscribed(frame);
        break;
      case FrameType.ERROR:
        if (waiting) waiting.reject(new RealtimeError(frame));
        else subscription?.onError(new RealtimeError(frame));
        break;
      default:
        waiting?.resolve(frame);
    }
  }

  welcomed(frame) {
    this.welcome = frame;
    this.failedOpens = 0;
    this.setStatus(Status.LIVE);
    this.emit("welcome", frame);
    this.monitor.start();
    this.healthyTimer = this.clock.setTimeout(() => this.backoff.reset(), this.healthyAfter);
    this.subscriptions.resubscribeAll();
    for (const entry of this.publishes.values()) this.sendPublish(entry);
  }

  // --- the application's API
  subscribe(topic, callbacks = {}) {
    return this.subscriptions.create(topic, callbacks);
  }
}

function newKey() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function createConsumer(url, options) {
  return new Consumer(url, options).connect();
}

// The consumer owns the connection, whatever carries it: a transport (websocket.js or
// event_stream.js, one interface) reconnected with backoff and jitter (at once when the
// browser comes back online or the tab becomes visible); it hands frames to the subscriptions
// and matches answers to requests by id. With `transport: "auto"` (the default) it falls back
// to Server-Sent Events when a WebSocket cannot be opened twice in a row, and tries WebSockets
// again later; "websocket" and "sse" force one. It never asks which transport it holds.
import { Backoff } from "./backoff.js";
import { ConnectionMonitor } from "./connection_monitor.js";
import { EventStreamTransport } from "./event_stream.js";
import { CloseCode, FrameType, PROTOCOL, socketUrl } from "./protocol.js";
import { Subscriptions } from "./subscriptions.js";
import { WebSocketTransport } from "./websocket.js";

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
    this.clock = options.clock ?? realClock;
    this.env = options.env ?? globalThis.window ?? null;
    this.document = options.document ?? globalThis.document ?? null;
    this.healthyAfter = options.healthyAfter ?? 10000;
    this.backoff = new Backoff({ random: options.random, ...options.backoff });
    this.monitor = new ConnectionMonitor(this, { clock: this.clock, ...options.monitor });
    this.subscriptions = new Subscriptions(this);
    this.pending = new Map(); // request id → {resolve, reject}
    this.publishes = new Map(); // idempotency key → a publish waiting for its answer
    this.publishTimeout = options.publishTimeout ?? 30000;
    this.newKey = options.newKey ?? newKey;
    // The two transports, one interface (websocket.js, event_stream.js); `active` carries.
    this.choice = options.transport ?? "auto"; // "auto", "websocket" or "sse"
    this.websocket = new WebSocketTransport(this, url, {
      ...options,
      protocols: options.protocols ?? [PROTOCOL],
    });
    this.eventStream = new EventStreamTransport(this, options);
    this.active = this.choice === "sse" ? this.eventStream : this.websocket;
    this.failedOpens = 0; // WebSockets closed before their welcome, in a row
    this.fallbackAfter = options.fallbackAfter ?? 2;
    this.websocketRetry = options.websocketRetry ?? 60000;
    this.retryTimer = null;
    this.listeners = new Map();
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

  // "websocket" or "sse": what carries the frames now.
  get mode() {
    return this.active.name;
  }

  // --- events: "status" (status), "frame" (frame in), "send" (frame out), "welcome" (frame),
  // "transport" (name), "close" (event), "refused" (body), "signedout"
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
    if (this.active.isOpen || this.status === Status.LIVE) return this;
    this.clearReconnect();
    if (this.status !== Status.RECONNECTING) this.setStatus(Status.CONNECTING);
    this.active.open();
    return this;
  }

  // Close for good (no reconnect).
  disconnect() {
    this.stopped = true;
    this.clearReconnect();
    this.env?.removeEventListener?.("online", this.onOnline);
    this.env?.removeEventListener?.("offline", this.onOffline);
    this.document?.removeEventListener?.("visibilitychange", this.onVisible);
    this.down();
    this.websocket.close(1000);
    this.eventStream.close();
    if (this.retryTimer !== null) this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.setStatus(Status.OFFLINE);
  }

  // Drop the current connection and connect again after a backoff delay.
  reconnect(reason = "reconnect") {
    this.down();
    this.active.close(4000, reason);
    this.scheduleReconnect();
  }

  // The network or the tab came back: connect now unless live already (a transport that
  // reconnects by itself is left to do so).
  reconnectSoon() {
    if (this.stopped || this.status === Status.LIVE || this.active.reconnectsItself) return;
    this.down();
    this.active.close(4000, "retry");
    this.clearReconnect();
    this.connect();
  }

  // What a connection held ends with it: the welcome, the monitor, unanswered requests.
  down() {
    for (const entry of this.publishes.values()) entry.inflight = false; // to be sent again
    this.welcome = null;
    this.monitor.stop();
    if (this.healthyTimer !== null) this.clock.clearTimeout(this.healthyTimer);
    this.healthyTimer = null;
    this.rejectPending("disconnected");
  }

  // The active transport closed (a socket's close event).
  transportClosed(event) {
    const welcomed = this.welcome !== null;
    this.emit("close", event);
    this.down();
    if (this.stopped) return;
    if (event.code === CloseCode.UNAUTHORIZED) {
      this.signedOut();
      return;
    }
    this.failedOpens = welcomed ? 0 : this.failedOpens + 1;
    const fallback = this.choice === "auto" && this.eventStream.available;
    if (fallback && this.failedOpens >= this.fallbackAfter) {
      this.useEventStream();
      return;
    }
    this.scheduleReconnect();
  }

  // --- the Server-Sent Events fallback
  useEventStream() {
    this.active = this.eventStream;
    this.clearReconnect();
    this.emit("transport", this.active.name);
    this.active.open();
    this.retryTimer = this.clock.setTimeout(() => this.tryWebSocketAgain(), this.websocketRetry);
  }

  tryWebSocketAgain() {
    this.retryTimer = null;
    if (this.stopped || this.active !== this.eventStream) return;
    this.eventStream.close();
    this.active = this.websocket;
    this.failedOpens = 0;
    this.emit("transport", this.active.name);
    this.setStatus(Status.RECONNECTING);
    this.connect();
  }

  // The transport is live (a socket's welcome, an event stream's open).
  live() {
    this.setStatus(Status.LIVE);
    for (const entry of this.publishes.values()) this.sendPublish(entry);
  }

  interrupted() {
    this.setStatus(Status.RECONNECTING);
  }

  refused(body) {
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
    const sent = this.active.send(frame);
    if (sent) this.emit("send", frame);
    return sent;
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
  // the connection drops before the answer it is sent again, with the same key, once the
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

  // Send a waiting publish through the active transport once it is live. Not through: kept,
  // and sent again (same key) when the transport is live again, or in a second if it still
  // is. `attempt` tells an answer to this attempt from a late one to an earlier attempt.
  sendPublish(entry) {
    if (entry.inflight || this.status !== Status.LIVE) return;
    entry.inflight = true;
    const attempt = (entry.attempt ?? 0) + 1;
    entry.attempt = attempt;
    const key = entry.frame.key;
    this.active.publish(entry.frame).then(
      (frame) => {
        this.clock.clearTimeout(entry.timer);
        this.publishes.delete(key);
        entry.resolve(frame);
      },
      (error) => {
        if (entry.attempt !== attempt || !this.publishes.has(key)) return; // stale, or over
        entry.inflight = false;
        if (error.code === "disconnected") {
          this.clock.setTimeout(() => {
            if (this.publishes.has(key)) this.sendPublish(entry);
          }, 1000);
          return;
        }
        this.clock.clearTimeout(entry.timer);
        this.publishes.delete(key);
        entry.reject(error instanceof RealtimeError ? error : new RealtimeError(error));
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
      case FrameType.PRESENCE:
        subscription?.handlePresence(frame);
        break;
      case FrameType.PRESENCE_DIFF:
        subscription?.handlePresenceDiff(frame);
        break;
      case FrameType.WHISPER:
        subscription?.handleWhisper(frame);
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
    this.emit("welcome", frame);
    this.monitor.start();
    this.healthyTimer = this.clock.setTimeout(() => this.backoff.reset(), this.healthyAfter);
    this.subscriptions.resubscribeAll();
    this.live();
  }

  // --- the application's API

  // The signed-in user's own topic (`user:<id>`, their notifications), from the welcome.
  get userTopic() {
    return this.welcome?.user_topic ?? null;
  }

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

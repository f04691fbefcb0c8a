import { Consumer } from "../../realtime/static/realtime/client/consumer.js";

// Test doubles: a WebSocket the test drives by hand and a clock it advances.
export class FakeClock {
  constructor() {
    this.time = 1000;
    this.timers = new Map();
    this.nextId = 1;
  }
  now() {
    return this.time;
  }
  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, fn });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  // Advance time by ms, running due timers in order.
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      const due = [...this.timers.entries()]
        .filter(([, t]) => t.at <= end)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.time = due[1].at;
      due[1].fn();
    }
    this.time = end;
  }
}

export function fakeWebSocketClass() {
  class FakeWebSocket {
    static instances = [];
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      FakeWebSocket.instances.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // --- driven by the test
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    welcome() {
      this.open();
      this.receive({ type: "welcome", protocol: "realtime.v1", connection: "c", user: null,
        limits: {} });
    }
    receive(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    serverClose(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code });
    }
    sentOfType(type) {
      return this.sent.filter((f) => f.type === type);
    }
  }
  return FakeWebSocket;
}

// An EventSource the test drives by hand.
export function fakeEventSourceClass() {
  class FakeEventSource {
    static instances = [];
    constructor(url, options) {
      this.url = url;
      this.options = options;
      this.listeners = new Map();
      this.closed = false;
      FakeEventSource.instances.push(this);
    }
    addEventListener(type, listener) {
      if (!this.listeners.has(type)) this.listeners.set(type, []);
      this.listeners.get(type).push(listener);
    }
    close() {
      this.closed = true;
    }
    // --- driven by the test
    open() {
      this.onopen?.({});
    }
    emit(type, frame) {
      const event = frame === undefined ? {} : { data: JSON.stringify(frame) };
      for (const listener of this.listeners.get(type) ?? []) listener(event);
    }
  }
  return FakeEventSource;
}

// A consumer on a fake WebSocket and clock, connected; `socket()` is the latest socket.
export function setup(options = {}) {
  const clock = new FakeClock();
  const WebSocket = fakeWebSocketClass();
  const env = new EventTarget();
  const consumer = new Consumer("ws://site/ws/", {
    WebSocket, clock, env, random: () => 0.5, ...options,
  });
  const statuses = [];
  consumer.on("status", (s) => statuses.push(s));
  consumer.connect();
  const socket = () => WebSocket.instances.at(-1);
  return { clock, WebSocket, env, consumer, statuses, socket };
}

// The same with a fake EventSource and fetch for the Server-Sent Events transport.
export function sseSetup(options = {}) {
  const EventSource = fakeEventSourceClass();
  const requests = [];
  const answers = [];
  const fetch = async (url, init) => {
    requests.push({ url, ...init, body: JSON.parse(init.body) });
    const answer = answers.shift() ?? { status: 201, body: { topic: "chat", seq: requests.length } };
    if (answer.fail) throw new TypeError("network");
    return { status: answer.status, json: async () => answer.body };
  };
  const made = setup({ EventSource, fetch, base: "http://site/page", fallbackAfter: 2,
    websocketRetry: 60000, document: { cookie: "a=1; csrftoken=tok%3D" }, ...options });
  return { ...made, EventSource, requests, answers, source: () => EventSource.instances.at(-1) };
}

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../realtime/static/realtime/client/backoff.js";
import { Consumer, Status } from "../../realtime/static/realtime/client/consumer.js";
import { socketUrl } from "../../realtime/static/realtime/client/protocol.js";
import { FakeClock, fakeEventSourceClass, fakeWebSocketClass } from "./fakes.js";

function setup(options = {}) {
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

test("socketUrl maps http to ws and https to wss", () => {
  assert.equal(socketUrl("/ws/", "http://example.com/page"), "ws://example.com/ws/");
  assert.equal(socketUrl("/ws/", "https://example.com:8443/x"), "wss://example.com:8443/ws/");
});

test("connects with the realtime.v1 subprotocol and goes live on welcome", () => {
  const { consumer, statuses, socket } = setup();
  assert.deepEqual(socket().protocols, ["realtime.v1"]);
  assert.equal(consumer.status, Status.CONNECTING);
  socket().welcome();
  assert.deepEqual(statuses, ["connecting", "live"]);
});

test("backoff delays stay within full-jitter bounds and are capped", () => {
  for (const r of [0, 0.3, 0.999]) {
    const backoff = new Backoff({ base: 100, cap: 1000, random: () => r });
    const delays = Array.from({ length: 8 }, () => backoff.next());
    const ceilings = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
    delays.forEach((d, i) => {
      assert.ok(d >= 0 && d < ceilings[i], `delay ${d} within [0, ${ceilings[i]})`);
      assert.equal(d, Math.floor(r * ceilings[i]));
    });
    backoff.reset();
    assert.equal(backoff.ceiling(), 100);
  }
});

test("reconnects after a drop with growing delays, and resets after a healthy connection", () => {
  const { clock, WebSocket, consumer, statuses, socket } = setup({
    backoff: { base: 1000, cap: 8000 }, healthyAfter: 5000,
  });
  socket().serverClose();
  assert.equal(consumer.status, Status.RECONNECTING);
  assert.equal(WebSocket.instances.length, 1);
  clock.advance(499); // random 0.5 * 1000
  assert.equal(WebSocket.instances.length, 1);
  clock.advance(1);
  assert.equal(WebSocket.instances.length, 2);
  socket().serverClose();
  clock.advance(999); // 0.5 * 2000 = 1000
  assert.equal(WebSocket.instances.length, 2);
  clock.advance(1);
  assert.equal(WebSocket.instances.length, 3);
  socket().welcome();
  clock.advance(5000); // healthy: backoff resets
  socket().serverClose();
  clock.advance(500);
  assert.equal(WebSocket.instances.length, 4);
  assert.ok(statuses.includes("reconnecting") && statuses.at(-1) === "reconnecting");
});

test("reconnects at once when the browser comes back online", () => {
  const { clock, WebSocket, env, consumer, socket } = setup({ backoff: { base: 60000 } });
  socket().serverClose();
  env.dispatchEvent(new Event("offline"));
  assert.equal(consumer.status, Status.OFFLINE);
  env.dispatchEvent(new Event("online"));
  assert.equal(WebSocket.instances.length, 2);
  clock.advance(120000); // the scheduled reconnect was cancelled
  assert.equal(WebSocket.instances.length, 2);
});

test("reconnects at once when the tab becomes visible after a drop", () => {
  const document = new EventTarget();
  document.visibilityState = "hidden";
  const { WebSocket, socket } = setup({ document, backoff: { base: 60000 } });
  socket().serverClose();
  document.visibilityState = "visible";
  document.dispatchEvent(new Event("visibilitychange"));
  assert.equal(WebSocket.instances.length, 2);
});

test("delivers each message once, in order, dropping duplicates by seq", () => {
  const { consumer, socket } = setup();
  socket().welcome();
  const got = [];
  consumer.subscribe("news", { onMessage: (data, frame) => got.push(frame.seq) });
  for (const seq of [1, 2, 2, 1, 3, 3, 4]) {
    socket().receive({ type: "message", topic: "news", seq, data: seq, ts: "t" });
  }
  assert.deepEqual(got, [1, 2, 3, 4]);
});

test("resubscribe with since after reconnect, and replayed duplicates are dropped", () => {
  const { clock, consumer, socket } = setup();
  socket().welcome();
  const got = [];
  const sub = consumer.subscribe("news", { onMessage: (d, f) => got.push(f.seq) });
  consumer.subscribe("chat");
  assert.deepEqual(socket().sentOfType("subscribe").map((f) => f.topic), ["news", "chat"]);
  socket().receive({ type: "message", topic: "news", seq: 4, data: 4, ts: "t" });
  socket().serverClose();
  clock.advance(60000);
  socket().welcome();
  const again = socket().sentOfType("subscribe");
  assert.deepEqual(again.map((f) => [f.topic, f.since]), [["news", 4], ["chat", undefined]]);
  socket().receive({ type: "subscribed", topic: "news", seq: 6, recovered: true, id: again[0].id });
  for (const seq of [4, 5, 6]) socket().receive({ type: "message", topic: "news", seq, data: seq });
  assert.deepEqual(got, [4, 5, 6]);
  assert.equal(sub.lastSeq, 6);
});

test("a server with a shorter history resets the subscription", () => {
  const { clock, consumer, socket } = setup();
  socket().welcome();
  const got = [];
  let resets = 0;
  consumer.subscribe("news", { onMessage: (d, f) => got.push(f.seq), onReset: () => resets++ });
  socket().receive({ type: "message", topic: "news", seq: 40, data: 1 });
  socket().serverClose();
  clock.advance(60000);
  socket().welcome();
  socket().receive({ type: "subscribed", topic: "news", seq: 2, recovered: false });
  socket().receive({ type: "message", topic: "news", seq: 1, data: 1 });
  socket().receive({ type: "message", topic: "news", seq: 2, data: 2 });
  assert.equal(resets, 1);
  assert.deepEqual(got, [40, 1, 2]);
});

test("a silent connection is pinged, and reconnected when no pong comes", () => {
  const { clock, WebSocket, socket } = setup({
    monitor: { staleAfter: 3000, pongTimeout: 2000, checkEvery: 500 },
  });
  socket().welcome();
  clock.advance(3000);
  assert.equal(socket().sentOfType("ping").length, 1);
  const ping = socket().sentOfType("ping")[0];
  socket().receive({ type: "pong", id: ping.id }); // alive
  clock.advance(2500);
  assert.equal(WebSocket.instances.length, 1);
  clock.advance(500); // silent again for 3 s: second ping, no answer
  assert.equal(socket().sentOfType("ping").length, 2);
  clock.advance(2000);
  assert.equal(WebSocket.instances[0].closedWith?.code, 4000);
  clock.advance(60000);
  assert.equal(WebSocket.instances.length, 2);
});

test("publish resolves with published and rejects with error", async () => {
  const { consumer, socket } = setup();
  socket().welcome();
  const sub = consumer.subscribe("chat");
  const ok = sub.publish({ text: "hi" });
  const bad = sub.publish({ text: "again" });
  const [first, second] = socket().sentOfType("publish");
  assert.deepEqual(first.data, { text: "hi" });
  assert.equal(first.topic, "chat");
  socket().receive({ type: "published", id: first.id, topic: "chat", seq: 7 });
  socket().receive({ type: "error", id: second.id, code: "rate_limited", message: "slow down",
    topic: "chat" });
  assert.equal((await ok).seq, 7);
  await assert.rejects(bad, (err) => err.code === "rate_limited" && err.message === "slow down");
});

test("every publish carries a fresh idempotency key", () => {
  let n = 0;
  const { consumer, socket } = setup({ newKey: () => `key-${++n}` });
  socket().welcome();
  const sub = consumer.subscribe("chat");
  sub.publish(1);
  sub.publish(2);
  assert.deepEqual(socket().sentOfType("publish").map((f) => f.key), ["key-1", "key-2"]);
});

test("a publish cut off by a dropped socket is sent again, same key, after reconnecting", async () => {
  const { consumer, socket, clock, WebSocket } = setup({ newKey: () => "k1", publishTimeout: 120000 });
  socket().welcome();
  const sub = consumer.subscribe("chat");
  const pending = sub.publish({ text: "once" });
  const [first] = socket().sentOfType("publish");
  socket().serverClose(); // no answer came
  clock.advance(60000);
  assert.equal(WebSocket.instances.length, 2);
  socket().welcome();
  const [again] = socket().sentOfType("publish");
  assert.equal(again.key, first.key);
  assert.deepEqual(again.data, { text: "once" });
  assert.notEqual(again.id, first.id);
  socket().receive({ type: "published", id: again.id, topic: "chat", seq: 3 });
  assert.equal((await pending).seq, 3);
  assert.equal(consumer.publishes.size, 0);
});

test("a publish while disconnected waits for the connection, then times out", async () => {
  const { consumer, socket, clock } = setup({ publishTimeout: 5000 });
  const sub = consumer.subscribe("chat");
  const queued = sub.publish(1); // not live yet: sent on welcome
  socket().welcome();
  const [frame] = socket().sentOfType("publish");
  socket().receive({ type: "published", id: frame.id, topic: "chat", seq: 1 });
  assert.equal((await queued).seq, 1);
  socket().serverClose();
  const lost = sub.publish(2);
  clock.advance(5000);
  await assert.rejects(lost, (err) => err.code === "disconnected");
  assert.equal(consumer.publishes.size, 0);
});

test("subscription errors go to onError; unsubscribe sends unsubscribe", () => {
  const { consumer, socket } = setup();
  socket().welcome();
  const errors = [];
  const sub = consumer.subscribe("secret", { onError: (e) => errors.push(e.code) });
  const id = socket().sentOfType("subscribe")[0].id;
  socket().receive({ type: "error", id, code: "forbidden", message: "no", topic: "secret" });
  assert.deepEqual(errors, ["forbidden"]);
  sub.unsubscribe();
  assert.deepEqual(socket().sentOfType("unsubscribe"), [{ type: "unsubscribe", topic: "secret" }]);
  socket().receive({ type: "message", topic: "secret", seq: 1, data: 1 });
  assert.throws(() => consumer.subscribe("a") && consumer.subscribe("a"), /Already subscribed/);
});

test("disconnect closes for good: no reconnect", () => {
  const { clock, WebSocket, consumer, socket } = setup();
  socket().welcome();
  consumer.disconnect();
  assert.equal(consumer.status, Status.OFFLINE);
  clock.advance(120000);
  assert.equal(WebSocket.instances.length, 1);
});

function sseSetup(options = {}) {
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

test("auto falls back to Server-Sent Events after two failed sockets, resuming each topic", () => {
  const { consumer, socket, EventSource, source, clock, WebSocket, statuses } = sseSetup();
  const got = [];
  const chat = consumer.subscribe("chat", { onMessage: (data) => got.push(data) });
  chat.lastSeq = 4;
  consumer.subscribe("news");
  socket().serverClose(); // closed before any welcome: blocked
  clock.advance(60000);
  assert.equal(EventSource.instances.length, 0);
  socket().serverClose();
  assert.equal(consumer.mode, "sse");
  assert.equal(source().url, "http://site/events/?topic=chat&topic=news&since=chat%3A4");
  source().open();
  assert.equal(consumer.status, "live");
  source().emit("message", { type: "message", topic: "chat", seq: 5, data: "five" });
  source().emit("message", { type: "message", topic: "chat", seq: 5, data: "five" }); // dup
  assert.deepEqual(got, ["five"]);
  source().emit("error"); // a drop: the browser reconnects by itself
  assert.equal(consumer.status, "reconnecting");
  const sockets = WebSocket.instances.length;
  clock.advance(60000); // WebSockets are tried again later
  assert.equal(WebSocket.instances.length, sockets + 1);
  assert.equal(consumer.mode, "websocket");
  assert.ok(source().closed);
  assert.ok(statuses.includes("live"));
});

test("with transport sse, topic changes reopen the stream once", async () => {
  const { consumer, EventSource, source } = sseSetup({ transport: "sse" });
  assert.equal(EventSource.instances.length, 0); // nothing subscribed yet
  consumer.subscribe("a");
  consumer.subscribe("b");
  await Promise.resolve();
  assert.equal(EventSource.instances.length, 1);
  assert.equal(source().url, "http://site/events/?topic=a&topic=b");
  consumer.subscriptions.get("a").unsubscribe();
  await Promise.resolve();
  assert.equal(source().url, "http://site/events/?topic=b");
  assert.ok(EventSource.instances[0].closed);
});

test("over SSE, publish goes over HTTP with CSRF and the key; refusals reject", async () => {
  const { consumer, requests, answers, source } = sseSetup({ transport: "sse",
    newKey: () => "key-1" });
  const sub = consumer.subscribe("chat");
  await Promise.resolve();
  source().open();
  const answer = await sub.publish({ text: "hi" });
  assert.deepEqual(answer, { type: "published", topic: "chat", seq: 1 });
  assert.equal(requests[0].url, "http://site/api/v1/topics/chat/messages");
  assert.equal(requests[0].headers["X-CSRFToken"], "tok=");
  assert.equal(requests[0].headers["Idempotency-Key"], "key-1");
  assert.deepEqual(requests[0].body, { data: { text: "hi" } });
  answers.push({ status: 403, body: { error: "forbidden", message: "no" } });
  await assert.rejects(sub.publish(1), (err) => err.code === "forbidden");
});

test("over SSE, a publish that did not get through is sent again with its key", async () => {
  const { consumer, requests, answers, clock, source } = sseSetup({ transport: "sse" });
  const sub = consumer.subscribe("chat");
  await Promise.resolve();
  source().open();
  answers.push({ fail: true });
  const pending = sub.publish("x");
  await new Promise((r) => setTimeout(r, 0));
  clock.advance(1000);
  const answer = await pending;
  assert.equal(requests.length, 2);
  assert.equal(requests[0].headers["Idempotency-Key"], requests[1].headers["Idempotency-Key"]);
  assert.equal(answer.seq, 2);
});

test("a stream the server ended (session over) is not reopened", async () => {
  const { consumer, source } = sseSetup({ transport: "sse" });
  const refusals = [];
  consumer.on("refused", (body) => refusals.push(body.error));
  consumer.subscribe("chat");
  await Promise.resolve();
  source().open();
  source().emit("error", { error: "unauthorized", message: "the session ended" });
  assert.deepEqual(refusals, ["unauthorized"]);
  assert.ok(source().closed);
  assert.equal(consumer.status, Status.SIGNED_OUT); // the page says so until reloaded
});

test("a socket closed with 4401 (session ended) shows signed out and never reconnects", () => {
  const { clock, WebSocket, consumer, statuses, socket } = setup();
  const signals = [];
  consumer.on("signedout", () => signals.push("signedout"));
  socket().welcome();
  socket().serverClose(4401);
  assert.equal(consumer.status, Status.SIGNED_OUT);
  assert.equal(statuses.at(-1), "signed out");
  assert.deepEqual(signals, ["signedout"]);
  clock.advance(600000);
  consumer.env.dispatchEvent(new Event("online")); // not even when the network returns
  assert.equal(WebSocket.instances.length, 1);
});

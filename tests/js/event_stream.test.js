// event_stream.js through the consumer: the Server-Sent Events fallback and HTTP publishing.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Status } from "../../realtime/static/realtime/client/consumer.js";
import { sseSetup } from "./fakes.js";

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

test("the transport alone: subscribe and unsubscribe reopen the stream, nothing else is sent", async () => {
  const { consumer, EventSource } = sseSetup({ transport: "sse" });
  const transport = consumer.eventStream;
  assert.equal(transport.name, "sse");
  assert.equal(transport.reconnectsItself, true);
  assert.equal(transport.send({ type: "ping" }), false);
  consumer.subscribe("a");
  await Promise.resolve();
  assert.equal(EventSource.instances.length, 1);
  assert.equal(transport.isOpen, true);
});

test("over SSE, presence is asked with presence=1 and its events reach the subscription", async () => {
  const { consumer, source } = sseSetup({ transport: "sse" });
  const subscription = consumer.subscribe("orders:1", { presence: true });
  await Promise.resolve();
  assert.equal(source().url, "http://site/events/?topic=orders%3A1&presence=1");
  source().open();
  source().emit("presence", { type: "presence", topic: "orders:1", members: [{ user: 1, name: "Ann", info: {} }], count: 1 });
  assert.equal(subscription.presence.count, 1);
  source().emit("presence_diff", { type: "presence_diff", topic: "orders:1", joins: [], leaves: [{ user: 1, name: "Ann", info: {} }], count: 0 });
  assert.equal(subscription.presence.members.size, 0);
  assert.equal(subscription.whisper("x"), false); // whispers are for WebSockets only
});

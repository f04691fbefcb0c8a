// consumer.js: exactly-once publishing over whatever transport, and disconnect.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Status } from "../../realtime/static/realtime/client/consumer.js";
import { setup } from "./fakes.js";

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

test("disconnect closes for good: no reconnect", () => {
  const { clock, WebSocket, consumer, socket } = setup();
  socket().welcome();
  consumer.disconnect();
  assert.equal(consumer.status, Status.OFFLINE);
  clock.advance(120000);
  assert.equal(WebSocket.instances.length, 1);
});

// subscriptions.js: resubscribing everything (with since) on every welcome; errors and unsubscribe.
import assert from "node:assert/strict";
import { test } from "node:test";

import { setup } from "./fakes.js";

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

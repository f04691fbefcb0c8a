// subscription.js: each message once, in order; a shorter server history resets.
import assert from "node:assert/strict";
import { test } from "node:test";

import { setup } from "./fakes.js";

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

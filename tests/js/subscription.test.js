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

test("presence: the roster, then joins and leaves as events; asked again on every subscribe", () => {
  const { clock, consumer, socket } = setup();
  socket().welcome();
  const events = [];
  const subscription = consumer.subscribe("orders:1", { presence: true });
  subscription.on("join", (m) => events.push(`join ${m.name}`));
  subscription.on("leave", (m) => events.push(`leave ${m.name}`));
  assert.equal(socket().sentOfType("subscribe").at(-1).presence, true);
  assert.equal(subscription.presence, null);
  const ann = { user: 1, name: "Ann", info: {} };
  const bob = { user: 2, name: "Bob", info: {} };
  socket().receive({ type: "presence", topic: "orders:1", members: [ann], count: 2 });
  assert.deepEqual([...subscription.presence.members.values()], [ann]);
  assert.equal(subscription.presence.count, 2);
  socket().receive({ type: "presence_diff", topic: "orders:1", joins: [bob], leaves: [], count: 3 });
  socket().receive({ type: "presence_diff", topic: "orders:1", joins: [], leaves: [ann], count: 2 });
  assert.deepEqual(events, ["join Bob", "leave Ann"]);
  assert.deepEqual([...subscription.presence.members.keys()], [2]);
  // After a reconnect the new roster is compared with the old: only what changed is told.
  socket().serverClose();
  clock.advance(60000);
  socket().welcome();
  assert.equal(socket().sentOfType("subscribe").at(-1).presence, true);
  socket().receive({ type: "presence", topic: "orders:1", members: [bob, ann], count: 2 });
  assert.deepEqual(events, ["join Bob", "leave Ann", "join Ann"]);
});

test("a subscription without presence does not ask for it", () => {
  const { consumer, socket } = setup();
  socket().welcome();
  consumer.subscribe("news");
  assert.equal("presence" in socket().sentOfType("subscribe").at(-1), false);
});

test("whispers go out as whisper frames and come in as events", () => {
  const { consumer, socket } = setup();
  socket().welcome();
  const heard = [];
  const subscription = consumer.subscribe("chat", { onWhisper: (data, from) => heard.push([data, from.name]) });
  subscription.on("whisper", (data) => heard.push(["event", data]));
  assert.equal(subscription.whisper({ typing: true }), true);
  assert.deepEqual(socket().sentOfType("whisper"), [{ type: "whisper", topic: "chat", data: { typing: true } }]);
  socket().receive({ type: "whisper", topic: "chat", from: { user: 2, name: "Bob" }, data: "hi" });
  assert.deepEqual(heard, [["hi", "Bob"], ["event", "hi"]]);
});

test("the consumer names the user's own topic from the welcome", () => {
  const { consumer, socket } = setup();
  assert.equal(consumer.userTopic, null);
  socket().open();
  socket().receive({ type: "welcome", protocol: "realtime.v1", connection: "c", user: "ann", user_topic: "user:7", limits: {} });
  assert.equal(consumer.userTopic, "user:7");
});

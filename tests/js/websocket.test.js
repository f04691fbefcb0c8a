// websocket.js through the consumer: the socket, its reconnects and the 4401 end.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Status } from "../../realtime/static/realtime/client/consumer.js";
import { setup } from "./fakes.js";

test("connects with the realtime.v1 subprotocol and goes live on welcome", () => {
  const { consumer, statuses, socket } = setup();
  assert.deepEqual(socket().protocols, ["realtime.v1"]);
  assert.equal(consumer.status, Status.CONNECTING);
  socket().welcome();
  assert.deepEqual(statuses, ["connecting", "live"]);
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

test("the transport alone: frames wait for the welcome, then go out as JSON", () => {
  const { consumer, socket } = setup();
  const transport = consumer.websocket;
  assert.equal(transport.name, "websocket");
  assert.equal(transport.send({ type: "ping" }), false); // not welcomed yet
  socket().welcome();
  assert.equal(transport.send({ type: "ping", id: 1 }), true);
  assert.deepEqual(socket().sentOfType("ping"), [{ type: "ping", id: 1 }]);
  transport.close(1000);
  assert.equal(transport.isOpen, false);
  assert.equal(socket().closedWith?.code, 1000);
});

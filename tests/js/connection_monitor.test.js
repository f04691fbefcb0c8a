// connection_monitor.js: a silent connection is pinged and, without a pong, reconnected.
import assert from "node:assert/strict";
import { test } from "node:test";

import { setup } from "./fakes.js";

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

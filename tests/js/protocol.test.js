// protocol.js: the wire vocabulary mirrored from realtime/protocol.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { CloseCode, socketUrl } from "../../realtime/static/realtime/client/protocol.js";

test("socketUrl maps http to ws and https to wss", () => {
  assert.equal(socketUrl("/ws/", "http://example.com/page"), "ws://example.com/ws/");
  assert.equal(socketUrl("/ws/", "https://example.com:8443/x"), "wss://example.com:8443/ws/");
});

test("close codes include 4401, the end of the user's session", () => {
  assert.equal(CloseCode.UNAUTHORIZED, 4401);
  assert.equal(CloseCode.POLICY_VIOLATION, 1008);
});

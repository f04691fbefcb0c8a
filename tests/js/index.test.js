// index.js: the client's public names, one import for pages.
import assert from "node:assert/strict";
import { test } from "node:test";

import * as client from "../../realtime/static/realtime/client/index.js";

test("the package exports the consumer, its transports' vocabulary and helpers", () => {
  for (const name of ["createConsumer", "Consumer", "Status", "RealtimeError", "Subscription",
    "Backoff", "ConnectionMonitor", "CloseCode", "ErrorCode", "FrameType", "PROTOCOL",
    "socketUrl", "WebSocketTransport", "EventStreamTransport"]) {
    assert.ok(client[name] !== undefined, name);
  }
});

// The realtime.v1 wire vocabulary, mirrored once from realtime/protocol.py.
export const PROTOCOL = "realtime.v1";

export const FrameType = Object.freeze({
  WELCOME: "welcome",
  SUBSCRIBED: "subscribed",
  MESSAGE: "message",
  UNSUBSCRIBED: "unsubscribed",
  PUBLISHED: "published",
  PONG: "pong",
  ERROR: "error",
  SUBSCRIBE: "subscribe",
  UNSUBSCRIBE: "unsubscribe",
  PUBLISH: "publish",
  PING: "ping",
  WHISPER: "whisper", // both ways: an event between clients, not stored
  PRESENCE: "presence",
  PRESENCE_DIFF: "presence_diff",
});

export const ErrorCode = Object.freeze({
  BAD_JSON: "bad_json",
  BAD_REQUEST: "bad_request",
  UNKNOWN_TYPE: "unknown_type",
  NOT_FOUND: "not_found",
  FORBIDDEN: "forbidden",
  RATE_LIMITED: "rate_limited",
  TOO_MANY_SUBSCRIPTIONS: "too_many_subscriptions",
  BINARY_UNSUPPORTED: "binary_unsupported",
  SERVER_ERROR: "server_error",
});

export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY_VIOLATION: 1008,
  TOO_BIG: 1009,
  SERVER_ERROR: 1011,
  UNAUTHORIZED: 4401, // the user's session ended: do not reconnect until a new page load
});

// The WebSocket URL for a path on this site: http → ws, https → wss.
export function socketUrl(path = "/ws/", base = globalThis.location?.href) {
  const url = new URL(path, base);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  return url.toString();
}

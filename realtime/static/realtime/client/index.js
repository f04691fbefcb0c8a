// The realtime.v1 browser client: `createConsumer(url).subscribe(topic, {onMessage})`.
export { Backoff } from "./backoff.js";
export { ConnectionMonitor } from "./connection_monitor.js";
export { Consumer, createConsumer, RealtimeError, Status } from "./consumer.js";
export { EventStreamTransport } from "./event_stream.js";
export { CloseCode, ErrorCode, FrameType, PROTOCOL, socketUrl } from "./protocol.js";
export { Subscription } from "./subscription.js";
export { WebSocketTransport } from "./websocket.js";

// The WebSocket transport: one socket with the realtime.v1 subprotocol. It carries frames
// both ways; the consumer decides when to open it again (backoff) and whether to fall back.
// Same interface as EventStreamTransport (event_stream.js): name, available, isOpen,
// reconnectsItself, open(), close(code, reason), send(frame), publish(frame).
const OPEN = 1;

export class WebSocketTransport {
  constructor(consumer, url, options = {}) {
    this.consumer = consumer;
    this.url = url;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.protocols = options.protocols;
    this.socket = null;
    this.name = "websocket";
    this.reconnectsItself = false; // the consumer reconnects it
  }

  get available() {
    return typeof this.WebSocket === "function";
  }

  get isOpen() {
    return this.socket !== null;
  }

  open() {
    if (this.socket) return;
    const socket = new this.WebSocket(this.url, this.protocols);
    this.socket = socket;
    socket.onmessage = (event) => {
      if (this.socket === socket) this.consumer.receive(event.data);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.consumer.transportClosed(event);
    };
    socket.onerror = () => {};
  }

  close(code = 1000, reason = undefined) {
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    try {
      socket.close(code, reason);
    } catch {
      // already closing
    }
  }

  // Send a frame once the server has welcomed this socket; false when it cannot go now.
  send(frame) {
    if (!this.socket || this.socket.readyState !== OPEN || !this.consumer.welcome) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  // A publish frame over the socket, answered by `published` or `error` (matched by id).
  publish(frame) {
    return this.consumer.request(frame);
  }
}

// Finds connections that died without closing: no frame for `staleAfter` ms → send a ping;
// no answer within `pongTimeout` ms → tell the consumer to reconnect.
export class ConnectionMonitor {
  constructor(consumer, { staleAfter = 25000, pongTimeout = 10000, checkEvery = 1000, clock }) {
    this.consumer = consumer;
    this.staleAfter = staleAfter;
    this.pongTimeout = pongTimeout;
    this.checkEvery = checkEvery;
    this.clock = clock;
    this.timer = null;
    this.lastFrameAt = 0;
    this.pingSentAt = null;
  }

  start() {
    this.stop();
    this.lastFrameAt = this.clock.now();
    this.pingSentAt = null;
    this.schedule();
  }

  stop() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  // Any frame from the server shows the connection is alive.
  recordFrame() {
    this.lastFrameAt = this.clock.now();
    this.pingSentAt = null;
  }

  schedule() {
    this.timer = this.clock.setTimeout(() => {
      this.check();
      if (this.timer !== null) this.schedule();
    }, this.checkEvery);
  }

  check() {
    const now = this.clock.now();
    if (this.pingSentAt !== null) {
      if (now - this.pingSentAt >= this.pongTimeout) {
        this.stop();
        this.consumer.reconnect("stale");
      }
    } else if (now - this.lastFrameAt >= this.staleAfter) {
      this.pingSentAt = now;
      this.consumer.ping();
    }
  }
}

// Reconnect delays: exponential backoff with full jitter, capped; reset after a healthy connection.
export class Backoff {
  constructor({ base = 500, cap = 30000, random = Math.random } = {}) {
    this.base = base;
    this.cap = cap;
    this.random = random;
    this.attempt = 0;
  }

  // The ceiling of the next delay: base * 2^attempt, at most cap.
  ceiling() {
    return Math.min(this.cap, this.base * 2 ** this.attempt);
  }

  // The next delay in ms, uniformly in [0, ceiling) ("full jitter"), so clients spread out.
  next() {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempt += 1;
    return delay;
  }

  reset() {
    this.attempt = 0;
  }
}

// backoff.js: full-jitter exponential delays.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../realtime/static/realtime/client/backoff.js";

test("backoff delays stay within full-jitter bounds and are capped", () => {
  for (const r of [0, 0.3, 0.999]) {
    const backoff = new Backoff({ base: 100, cap: 1000, random: () => r });
    const delays = Array.from({ length: 8 }, () => backoff.next());
    const ceilings = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
    delays.forEach((d, i) => {
      assert.ok(d >= 0 && d < ceilings[i], `delay ${d} within [0, ${ceilings[i]})`);
      assert.equal(d, Math.floor(r * ceilings[i]));
    });
    backoff.reset();
    assert.equal(backoff.ceiling(), 100);
  }
});

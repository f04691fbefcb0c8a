// The benchmark's second load generator: N clients of the `ws` package in one Node.js
// process, speaking to bench/run.py exactly as bench/loadgen.py does, so the two harnesses
// check each other (bench/RESULTS.md, "Two load generators").
//
//   node bench/node/loadgen.mjs --url ws://127.0.0.1:8000/ws/ --clients 1000 --count 80 \
//        --topic bench-1 [--drain 5] [--max-wait 20] [--concurrency 200] [--hold]
//
// Prints {"ready": ...} once every client is connected (and subscribed), waits for a line on
// stdin (the publisher finished), then for every message on every client (or until nothing
// arrived for --drain seconds, at most --max-wait), prints one JSON line of results, exits.
// Each message's data carries its send time (`t`, ns since the epoch) and index (`i`).
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";

function parseArgs(argv) {
  const args = { url: [], drain: 10, maxWait: 20, concurrency: 200, hold: false };
  for (let k = 0; k < argv.length; k++) {
    const name = argv[k];
    const value = () => argv[++k];
    if (name === "--url") args.url.push(value());
    else if (name === "--clients") args.clients = Number(value());
    else if (name === "--count") args.count = Number(value());
    else if (name === "--topic") args.topic = value();
    else if (name === "--drain") args.drain = Number(value());
    else if (name === "--max-wait") args.maxWait = Number(value());
    else if (name === "--concurrency") args.concurrency = Number(value());
    else if (name === "--hold") args.hold = true;
    else throw new Error(`unknown argument ${name}`);
  }
  if (!args.url.length || !(args.clients > 0) || !(args.count >= 0)) {
    throw new Error("--url, --clients and --count are required");
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const count = Math.max(args.count, 1);
const stats = {
  expected: args.clients * count,
  received: 0,
  duplicates: 0,
  otherFrames: 0,
  latencies: new Float64Array(args.clients * count), // ms
  firstArrival: null,
  lastArrival: null,
};
let onDone = null;
const nowNs = () => (performance.timeOrigin + performance.now()) * 1e6; // wall clock, ns
const MARK = '"data":{"t":';

function onMessage(client, text) {
  const now = nowNs();
  const at = text.lastIndexOf(MARK);
  if (at >= 0 && text.startsWith('{"type":"message"')) {
    const comma = text.indexOf(",", at + MARK.length);
    const sent = Number(text.slice(at + MARK.length, comma));
    const i = Number(text.slice(text.indexOf(":", comma) + 1, text.indexOf("}", comma)));
    if (client.seen[i]) {
      stats.duplicates++;
      return;
    }
    client.seen[i] = 1;
    stats.latencies[stats.received++] = (now - sent) / 1e6;
    stats.lastArrival = performance.now() / 1000;
    if (stats.firstArrival === null) stats.firstArrival = stats.lastArrival;
    if (stats.received >= stats.expected && onDone) onDone();
    return;
  }
  const frame = JSON.parse(text);
  if (frame.type === "subscribed" && client.subscribed) {
    const resolve = client.subscribed;
    client.subscribed = null;
    resolve();
  } else {
    stats.otherFrames++;
  }
}

function openOne(url) {
  return new Promise((resolve, reject) => {
    const origin = new URL(url.replace(/^ws/, "http")).origin;
    const ws = new WebSocket(url, "realtime.v1", { origin, perMessageDeflate: false });
    const client = { ws, seen: new Uint8Array(count), subscribed: null };
    ws.on("message", (data) => onMessage(client, data.toString()));
    ws.once("open", () => resolve(client));
    ws.once("error", reject);
  });
}

async function pool(items, concurrency, work) {
  const results = new Array(items.length);
  let next = 0;
  async function runner() {
    while (next < items.length) {
      const k = next++;
      results[k] = await work(items[k], k);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, runner));
  return results;
}

async function openWithRetry(url) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await openOne(url);
    } catch (error) {
      if (attempt === 4) throw error;
      await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
    }
  }
}

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

let started = performance.now();
const indices = Array.from({ length: args.clients }, (_, k) => k);
const clients = await pool(indices, args.concurrency, (k) =>
  openWithRetry(args.url[k % args.url.length]),
);
const openSeconds = (performance.now() - started) / 1000;
let subscribeSeconds = 0;
if (args.topic) {
  started = performance.now();
  const frame = JSON.stringify({ type: "subscribe", topic: args.topic });
  await pool(clients, args.concurrency, (client) => {
    const done = new Promise((resolve) => (client.subscribed = resolve));
    client.ws.send(frame);
    return done;
  });
  subscribeSeconds = (performance.now() - started) / 1000;
}
console.log(JSON.stringify({ ready: true, open_seconds: openSeconds, subscribe_seconds: subscribeSeconds }));

await nextLine(); // the publisher finished (or, with --hold, the orchestrator read the RSS)
if (args.hold) {
  console.log(JSON.stringify({ held: true }));
} else {
  const giveUp = performance.now() + args.maxWait * 1000;
  let lastCount = -1;
  let quietSince = performance.now();
  while (stats.received < stats.expected && performance.now() < giveUp) {
    await new Promise((resolve) => {
      onDone = resolve;
      setTimeout(resolve, 500);
    });
    if (stats.received !== lastCount) {
      lastCount = stats.received;
      quietSince = performance.now();
    } else if (performance.now() - quietSince > args.drain * 1000) {
      break;
    }
  }
  const lat = stats.latencies.slice(0, stats.received).sort();
  const pct = (p) =>
    lat.length ? lat[Math.min(lat.length - 1, Math.max(0, Math.round((p / 100) * (lat.length - 1))))] : null;
  const seenTotal = clients.reduce((sum, c) => sum + c.seen.reduce((a, b) => a + b, 0), 0);
  console.log(
    JSON.stringify({
      clients: args.clients,
      count,
      expected: stats.expected,
      received: stats.received,
      lost: stats.expected - seenTotal,
      duplicates: stats.duplicates,
      p50_ms: pct(50),
      p90_ms: pct(90),
      p99_ms: pct(99),
      max_ms: lat.length ? lat[lat.length - 1] : null,
      first_arrival: stats.firstArrival,
      last_arrival: stats.lastArrival,
      other_frames: stats.otherFrames,
    }),
  );
}
for (const client of clients) client.ws.terminate();
lines.close();
process.exit(0);

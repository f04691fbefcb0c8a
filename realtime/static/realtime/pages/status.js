// The admin's "Realtime status" page: asks status.json every 2 s, shows the figures, turns
// cumulative counters into rates, and draws the last five minutes as sparklines.
const root = document.getElementById("realtime-status");
const every = Number(root.dataset.every) || 2000;
const keep = Math.round(300000 / every); // five minutes of samples
const series = { connections: [], subscriptions: [], frames: [], published: [], outbox: [] };
let previous = null;

function spark(name) {
  const svg = document.getElementById(`spark-${name}`);
  const values = series[name];
  if (!svg || values.length < 2) return;
  const max = Math.max(1, ...values);
  // The newest sample at the right edge; at least 20 slots, at most five minutes.
  const step = 150 / (Math.max(values.length, 20) - 1);
  const offset = 150 - (values.length - 1) * step;
  const points = values.map((v, i) => `${(offset + i * step).toFixed(1)},${(34 - (v / max) * 30).toFixed(1)}`);
  const area = `${offset.toFixed(1)},36 ${points.join(" ")} 150,36`;
  svg.innerHTML =
    `<polygon fill="currentColor" fill-opacity="0.12" points="${area}"/>` +
    `<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="${points.join(" ")}"/>`;
}

function push(name, value, shown = value) {
  series[name].push(value);
  if (series[name].length > keep) series[name].shift();
  document.getElementById(`fig-${name}`).textContent = String(shown);
  spark(name);
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = String(text);
  return td;
}

function render(snapshot) {
  const now = Date.parse(snapshot.time);
  push("connections", snapshot.totals.connections);
  push("subscriptions", snapshot.totals.subscriptions);
  push("outbox", snapshot.outbox_pending);
  push("published", snapshot.published_last_10s / 10, (snapshot.published_last_10s / 10).toFixed(1));
  if (previous) {
    const seconds = Math.max(0.001, (now - previous.at) / 1000);
    const rate = Math.max(0, (snapshot.totals.frames - previous.frames) / seconds);
    push("frames", rate, Math.round(rate).toLocaleString());
  }
  previous = { at: now, frames: snapshot.totals.frames };
  const tbody = document.querySelector("#processes tbody");
  const rows = snapshot.processes.map((p) => {
    const tr = document.createElement("tr");
    tr.append(cell(p.host), cell(p.pid), cell(p.hub), cell(p.state), cell(p.connections),
      cell(p.subscriptions), cell(p.frames));
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell("No server process has reported in the last 10 seconds.");
    td.colSpan = 7;
    tr.append(td);
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
  document.getElementById("redis-state").textContent = `Redis: ${snapshot.redis}`;
  const scheduler = document.getElementById("scheduler");
  scheduler.textContent = snapshot.scheduler
    ? `Leader ${snapshot.scheduler.owner}, last tick ${new Date(snapshot.scheduler.at).toLocaleTimeString()}`
    : "No scheduler has ticked in the last 2 minutes.";
  document.getElementById("status-updated").textContent =
    `Updated ${new Date(now).toLocaleTimeString()}.`;
  root.dataset.updates = String(Number(root.dataset.updates || 0) + 1);
}

async function poll() {
  try {
    const response = await fetch(root.dataset.url, { credentials: "same-origin" });
    if (response.ok) render(await response.json());
  } catch {
    // the next round tries again
  }
}

poll();
setInterval(poll, every);

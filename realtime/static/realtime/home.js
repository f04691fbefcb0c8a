// Minimal live home page: subscribe to every listed topic and show its latest message.
// Message data is rendered with textContent only, never as HTML.
const status = document.getElementById("status");
const items = new Map(
  [...document.querySelectorAll("[data-topic]")].map((el) => [el.dataset.topic, el]),
);
const last = new Map();

function setStatus(value) {
  status.dataset.status = value;
  status.textContent = value;
}

function connect(delay = 500) {
  const url = new URL("/ws/", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url, "realtime.v1");
  ws.onopen = () => {
    for (const topic of items.keys()) {
      const frame = { type: "subscribe", topic };
      if (last.has(topic)) frame.since = last.get(topic);
      ws.send(JSON.stringify(frame));
    }
  };
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "welcome") setStatus("live");
    if (frame.type === "message" && frame.seq > (last.get(frame.topic) ?? 0)) {
      last.set(frame.topic, frame.seq);
      const pre = items.get(frame.topic)?.querySelector(".latest");
      if (pre) {
        pre.textContent = JSON.stringify(frame.data, null, 2);
        pre.dataset.seq = frame.seq;
      }
    }
  };
  ws.onclose = () => {
    setStatus("reconnecting");
    const wait = Math.random() * Math.min(30000, delay * 2);
    setTimeout(() => connect(Math.min(30000, delay * 2)), wait);
  };
}

connect();

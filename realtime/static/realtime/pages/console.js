// The raw console: connect, disconnect, send any frame, see every frame in and out.
import { PROTOCOL, socketUrl } from "../client/protocol.js";

const log = document.getElementById("console-log");
const state = document.getElementById("console-state");
const connectButton = document.getElementById("console-connect");
const disconnectButton = document.getElementById("console-disconnect");
const input = document.getElementById("console-frame");
const badge = document.getElementById("status");
let socket = null;

function setState(text, status) {
  state.textContent = text;
  badge.dataset.status = status;
  badge.textContent = status;
  connectButton.disabled = socket !== null;
  disconnectButton.disabled = socket === null;
}

function record(direction, text) {
  const item = document.createElement("li");
  item.className = direction;
  const arrow = { in: "←", out: "→", event: "•" }[direction];
  item.textContent = `${new Date().toISOString().slice(11, 23)} ${arrow} ${text}`;
  if (direction === "in" && text.startsWith('{"type":"error"')) item.classList.add("error-frame");
  log.prepend(item);
}

function connect() {
  if (socket) return;
  socket = new WebSocket(socketUrl("/ws/"), PROTOCOL);
  setState("connecting", "connecting");
  socket.onopen = () => {
    record("event", `open (${socket.protocol || "no subprotocol"})`);
    setState("open", "live");
  };
  socket.onmessage = (event) => record("in", event.data);
  socket.onclose = (event) => {
    record("event", `close ${event.code}${event.reason ? ` ${event.reason}` : ""}`);
    socket = null;
    setState(`closed (${event.code})`, "offline");
  };
}

connectButton.addEventListener("click", connect);
document.getElementById("console-clear").addEventListener("click", () => log.replaceChildren());
disconnectButton.addEventListener("click", () => socket?.close(1000));
document.getElementById("console-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    record("event", "not connected: press Connect first");
    return;
  }
  socket.send(input.value);
  record("out", input.value);
});
for (const example of document.querySelectorAll(".example")) {
  example.addEventListener("click", () => {
    input.value = example.dataset.frame;
    input.focus();
  });
}
const asked = new URLSearchParams(location.search).get("topic");
if (asked) input.value = JSON.stringify({ type: "subscribe", topic: asked, since: 0 });
setState("closed", "offline");
connect();

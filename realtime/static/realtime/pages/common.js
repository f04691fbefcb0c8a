// Shared by the pages: one consumer per page, and the status badge that shows its state.
import { createConsumer } from "../client/index.js";

// The page's one consumer (every script of the page shares it).
export function pageConsumer() {
  if (globalThis.realtimeConsumer) return globalThis.realtimeConsumer;
  const consumer = createConsumer();
  const badge = document.getElementById("status");
  if (badge) {
    badge.hidden = false; // shown only on pages that hold a connection
    const show = (status) => {
      badge.dataset.status = status;
      badge.textContent = status;
    };
    show(consumer.status);
    consumer.on("status", show);
  }
  consumer.on("signedout", () => showSignedOut(document));
  globalThis.realtimeConsumer = consumer; // for the console and for tests
  localizeTimes();
  keepTimesCurrent();
  return consumer;
}

// The session ended while the page was open: the header no longer names the user; a link
// signs in again (and comes back here).
export function showSignedOut(doc) {
  const user = doc.getElementById("user");
  if (!user) return;
  const link = doc.createElement("a");
  link.href = `/accounts/login/?next=${encodeURIComponent(doc.location?.pathname ?? "/")}`;
  link.textContent = "Signed out: sign in again";
  link.id = "signed-out";
  user.replaceChildren(link);
}

// Message data as text for people: strings as they are, anything else as indented JSON.
export function dataText(data) {
  return typeof data === "string" ? data : JSON.stringify(data, null, 2);
}

// The one way pages write a time: the visitor's locale and time zone (the server writes
// <time datetime> in UTC; localizeTimes rewrites them on load and on every insert).
export function timeText(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString();
}

// "just now", "5 s ago", "2 min ago", "3 h ago", or the date for older times.
export function agoText(iso, now = Date.now()) {
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return "";
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

// Keep every relative time on the page current.
export function keepTimesCurrent(every = 15000) {
  const refresh = () => {
    for (const element of document.querySelectorAll("time[datetime][data-ago]")) {
      element.dataset.ago = agoText(element.dateTime);
    }
  };
  return setInterval(refresh, every);
}

// Every <time datetime> under `root`, written the one way this page writes times (the
// visitor's locale and time zone): on load for server-rendered times, and on each insert.
export function localizeTimes(root = document) {
  for (const element of root.querySelectorAll("time[datetime]")) {
    const text = timeText(element.dateTime);
    if (text) {
      element.textContent = text;
      element.dataset.ago = agoText(element.dateTime);
    }
  }
}

// A message's body: the server's rendering (frame.html, escaped by Django's templates) when
// there is one, else its data as text.
export function messageBody(data, frame) {
  if (frame.html) {
    const body = document.createElement("div");
    body.className = "data rendered";
    body.innerHTML = frame.html; // rendered and escaped on the server, never client data
    localizeTimes(body);
    return body;
  }
  const body = document.createElement("pre");
  body.className = "data";
  body.textContent = dataText(data); // text, never HTML
  return body;
}

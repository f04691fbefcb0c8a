// Shared by the pages: one consumer per page, and the status badge that shows its state.
import { createConsumer } from "../client/index.js";

export function pageConsumer() {
  const consumer = createConsumer();
  const badge = document.getElementById("status");
  if (badge) {
    const show = (status) => {
      badge.dataset.status = status;
      badge.textContent = status;
    };
    show(consumer.status);
    consumer.on("status", show);
  }
  globalThis.realtimeConsumer = consumer; // for the console and for tests
  return consumer;
}

// Message data as text for people: strings as they are, anything else as indented JSON.
export function dataText(data) {
  return typeof data === "string" ? data : JSON.stringify(data, null, 2);
}

export function timeText(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString();
}

// Every <time datetime> under `root`, written the one way this page writes times (the
// visitor's locale and time zone): on load for server-rendered times, and on each insert.
export function localizeTimes(root = document) {
  for (const element of root.querySelectorAll("time[datetime]")) {
    const text = timeText(element.dateTime);
    if (text) element.textContent = text;
  }
}

// A message's body: the server's rendering (frame.html, escaped by Django's templates) when
// there is one, else its data as text.
export function messageBody(data, frame, tag = "div") {
  if (frame.html) {
    const body = document.createElement(tag === "pre" ? "div" : tag);
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

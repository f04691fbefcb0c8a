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

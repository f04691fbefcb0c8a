// The admin's topic pages: "watching now" counts kept current (from the presence every hub
// writes to Redis), polled every few seconds. The topic page's messages are a live region.
import "./live.js";

const holder = document.querySelector("[data-presence-url]");

async function refresh() {
  try {
    const response = await fetch(holder.dataset.presenceUrl, { credentials: "same-origin" });
    if (!response.ok) return;
    const { topics } = await response.json();
    for (const cell of document.querySelectorAll("[data-watching]")) {
      cell.textContent = String(topics[cell.dataset.watching] ?? 0);
    }
  } catch {
    // the next round tries again
  }
}

if (holder) {
  refresh();
  setInterval(refresh, 3000);
}

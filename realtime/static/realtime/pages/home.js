// The home page: each listed topic's latest message is a live region ({% live_topic %},
// live.js); this script keeps the "Latest: #seq, time" line above each one current.
import { agoText, timeText } from "./common.js";
import "./live.js";

for (const item of document.querySelectorAll("li.topic[data-topic]")) {
  item.addEventListener("live:message", (event) => {
    const frame = event.detail;
    item.querySelector(".seq").textContent = `#${frame.seq}`;
    const when = item.querySelector(".when");
    when.dateTime = frame.ts;
    when.textContent = timeText(frame.ts);
    when.dataset.ago = agoText(frame.ts);
    item.dataset.seq = frame.seq;
  });
}

// The home page: each listed topic's latest message is a live region ({% live_topic %},
// live.js, showing the message with its time); this script keeps the "Latest: #seq" line
// above each one current ("No messages yet" until the first).
import "./live.js";

for (const item of document.querySelectorAll("li.topic[data-topic]")) {
  item.addEventListener("live:message", (event) => {
    const frame = event.detail;
    const line = item.querySelector(".latest-line");
    const seq = document.createElement("span");
    seq.className = "seq";
    seq.textContent = `#${frame.seq}`;
    line.replaceChildren("Latest: ", seq);
    item.dataset.seq = frame.seq;
  });
}

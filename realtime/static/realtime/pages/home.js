// The home page: each listed topic's latest message, kept current.
import { localizeTimes, messageBody, pageConsumer, timeText } from "./common.js";

localizeTimes(); // the server-rendered times, in the visitor's format
const consumer = pageConsumer();
for (const item of document.querySelectorAll("[data-topic]")) {
  const subscription = consumer.subscribe(item.dataset.topic, {
    onMessage(data, frame) {
      item.querySelector(".latest").replaceChildren(messageBody(data, frame));
      item.querySelector(".seq").textContent = `#${frame.seq}`;
      const when = item.querySelector(".when");
      when.dateTime = frame.ts;
      when.textContent = timeText(frame.ts);
      item.dataset.seq = frame.seq;
    },
  });
  // The page already shows the latest message: resume after it rather than replay the backlog.
  const seq = Number(item.dataset.seq);
  if (seq > 0) subscription.lastSeq = seq;
}

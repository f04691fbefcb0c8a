// One topic's live stream, newest on top, and the publish form where visitors may publish.
import { messageBody, pageConsumer, timeText } from "./common.js";

const page = document.getElementById("topic-page");
const stream = document.getElementById("stream");
const empty = document.getElementById("empty");
const errorBox = document.getElementById("topic-error");
const consumer = pageConsumer();

function showError(error) {
  errorBox.hidden = false;
  errorBox.textContent = `${error.code}: ${error.message}`;
}

const subscription = consumer.subscribe(page.dataset.topic, {
  onMessage(data, frame) {
    const item = document.createElement("li");
    item.dataset.seq = frame.seq;
    const meta = document.createElement("div");
    meta.className = "meta";
    const seq = document.createElement("span");
    seq.className = "seq";
    seq.textContent = `#${frame.seq}`;
    const when = document.createElement("time");
    when.dateTime = frame.ts;
    when.textContent = timeText(frame.ts);
    meta.append(seq, when);
    item.append(meta, messageBody(data, frame));
    stream.prepend(item);
    empty.hidden = true;
  },
  onError: showError,
  onReset() {
    stream.replaceChildren();
  },
});

const form = document.getElementById("publish-form");
if (form) {
  const text = document.getElementById("publish-text");
  const result = document.getElementById("publish-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.textContent = "publishing…";
    try {
      const answer = await subscription.publish({ text: text.value });
      result.textContent = `published as #${answer.seq}`;
      text.value = "";
    } catch (error) {
      result.textContent = `not published: ${error.message}`;
    }
  });
}

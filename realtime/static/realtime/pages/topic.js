// One topic's page: the messages are a live region ({% live_topic %}, live.js); this script
// adds the publish form where visitors may publish.
import { pageConsumer } from "./common.js";

const page = document.getElementById("topic-page");
const errorBox = document.getElementById("topic-error");
const consumer = pageConsumer();

const form = document.getElementById("publish-form");
if (form) {
  const text = document.getElementById("publish-text");
  const result = document.getElementById("publish-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.textContent = "publishing…";
    try {
      const answer = await consumer.publish(page.dataset.topic, { text: text.value });
      result.textContent = `published as #${answer.seq}`;
      text.value = "";
      errorBox.hidden = true;
    } catch (error) {
      result.textContent = `not published: ${error.message}`;
    }
  });
  // Enter sends, as in every chat; Shift+Enter starts a new line.
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

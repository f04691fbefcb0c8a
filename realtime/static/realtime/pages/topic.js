// One topic's page: the messages are a live region ({% live_topic %}, live.js); this script
// adds the publish form where visitors may publish, who is here (presence) and "… is typing"
// (whispers: sent at most every 2 s while typing, shown for 5 s).
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

const TYPING_EVERY = 2000;
const TYPING_SHOWN = 5000;
const stream = document.getElementById("stream");

const presenceList = document.getElementById("presence-members");
if (presenceList && stream) {
  const count = document.getElementById("presence-count");
  stream.addEventListener("live:presence", (event) => {
    const { members, count: connections } = event.detail;
    const items = [...members.values()].map((member) => {
      const li = document.createElement("li");
      li.dataset.user = member.user;
      li.textContent = member.name; // text, never HTML
      return li;
    });
    presenceList.replaceChildren(...items);
    const others = connections - members.size;
    count.textContent = `(${connections} connected${others > 0 ? `, ${others} not signed in or in other tabs` : ""})`;
  });
}

const typing = document.getElementById("typing");
if (typing && stream && page.dataset.whispers === "1") {
  const typists = new Map(); // name → timer
  const show = () => {
    const names = [...typists.keys()];
    typing.textContent = names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
  };
  stream.addEventListener("live:whisper", (event) => {
    const { data, from } = event.detail;
    if (!data || data.typing !== true) return;
    const name = from?.name || "Someone";
    clearTimeout(typists.get(name));
    typists.set(name, setTimeout(() => {
      typists.delete(name);
      show();
    }, TYPING_SHOWN));
    show();
  });
  const input = document.getElementById("publish-text");
  let lastSent = 0;
  input?.addEventListener("input", () => {
    const now = Date.now();
    if (now - lastSent < TYPING_EVERY || !input.value) return;
    lastSent = now;
    consumer.subscriptions.get(page.dataset.topic)?.whisper({ typing: true });
  });
}

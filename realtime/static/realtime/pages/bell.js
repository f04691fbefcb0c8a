// The notifications bell of signed-in users: their own topic (user:<id>, named in the header
// and in the welcome) as a list that stays live and resumes like every topic, and an unread
// count: what arrived after the last one seen (kept in this browser's localStorage). Opening
// the list marks everything read.
import { dataText, pageConsumer, timeText } from "./common.js";

const bell = document.getElementById("bell");
if (bell) {
  const topic = bell.dataset.userTopic;
  const button = document.getElementById("bell-button");
  const list = document.getElementById("bell-list");
  const count = document.getElementById("bell-count");
  const storageKey = `realtime:read:${topic}`;
  const LIMIT = 20;
  let readUpTo = Number(globalThis.localStorage?.getItem(storageKey)) || 0;
  let newest = 0;

  const showCount = () => {
    const unread = [...list.children].filter((li) => Number(li.dataset.seq) > readUpTo).length;
    count.textContent = String(unread);
    count.dataset.unread = String(unread);
    bell.classList.toggle("unread", unread > 0);
  };

  const markRead = () => {
    readUpTo = Math.max(readUpTo, newest);
    globalThis.localStorage?.setItem(storageKey, String(readUpTo));
    showCount();
  };

  const item = (data, frame) => {
    const li = document.createElement("li");
    li.dataset.seq = frame.seq;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = data && typeof data === "object" && "text" in data ? String(data.text) : dataText(data);
    const when = document.createElement("time");
    when.dateTime = frame.ts;
    when.textContent = timeText(frame.ts);
    when.className = "meta";
    li.append(text, " ", when);
    return li;
  };

  const consumer = pageConsumer();
  consumer.subscribe(topic, {
    onMessage(data, frame) {
      list.querySelector(":scope > li.empty")?.remove();
      list.prepend(item(data, frame));
      while (list.children.length > LIMIT) list.lastElementChild.remove();
      newest = Math.max(newest, frame.seq);
      if (!list.hidden) markRead();
      else showCount();
    },
    onReset() {
      list.replaceChildren();
      readUpTo = 0;
      showCount();
    },
  });

  button.addEventListener("click", () => {
    list.hidden = !list.hidden;
    button.setAttribute("aria-expanded", String(!list.hidden));
    if (!list.hidden) markRead();
  });
}

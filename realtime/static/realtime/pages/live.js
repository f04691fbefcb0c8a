// Live regions: every element with data-live-topic (rendered by {% live_topic %}) is kept
// current. One subscription per topic, resumed after the seq the server rendered at, so a
// message published between the page's HTML and its subscribe arrives, once. New messages go
// in order (newest first, or oldest first), trimmed to the region's limit; mode "replace"
// shows only the latest. Each insert fires a "live:message" event on the region (detail: the
// frame), for pages that show more (a count, a seq) around it. A region rendered with
// presence=True subscribes with presence and fires "live:presence" (who is here) and
// "live:whisper" ({data, from}) on the region.
import { messageBody, pageConsumer } from "./common.js";

const consumer = pageConsumer();

function item(frame, withMeta) {
  const li = document.createElement("li");
  li.dataset.seq = frame.seq;
  li.className = "fresh";
  if (withMeta) {
    const meta = document.createElement("div");
    meta.className = "meta";
    const seq = document.createElement("span");
    seq.className = "seq";
    seq.textContent = `#${frame.seq}`;
    meta.append(seq); // the time is the message's own (its template shows it once)
    li.append(meta);
  }
  li.append(messageBody(frame.data, frame));
  return li;
}

function insert(region, frame) {
  const seqs = [...region.children].map((li) => Number(li.dataset.seq)).filter((n) => n > 0);
  if (seqs.includes(frame.seq)) return; // already shown (rendered, or another region's resume)
  region.querySelector(":scope > li.empty")?.remove();
  const li = item(frame, region.dataset.meta !== "0");
  const limit = Number(region.dataset.limit) || 10;
  if (region.dataset.mode === "replace") {
    region.replaceChildren(li);
  } else if (region.dataset.order === "oldest-first") {
    region.append(li);
    while (region.children.length > limit) region.firstElementChild.remove();
  } else {
    region.prepend(li);
    while (region.children.length > limit) region.lastElementChild.remove();
  }
  region.dispatchEvent(new CustomEvent("live:message", { detail: frame, bubbles: true }));
}

const regionsByTopic = new Map();
for (const region of document.querySelectorAll("[data-live-topic]")) {
  if (region.dataset.liveBound) continue;
  region.dataset.liveBound = "1";
  const topic = region.dataset.liveTopic;
  if (!regionsByTopic.has(topic)) regionsByTopic.set(topic, []);
  regionsByTopic.get(topic).push(region);
}
const tell = (regions, name, detail) => {
  for (const region of regions) {
    region.dispatchEvent(new CustomEvent(name, { detail, bubbles: true }));
  }
};
for (const [topic, regions] of regionsByTopic) {
  const subscription = consumer.subscribe(topic, {
    presence: regions.some((r) => r.dataset.presence === "1"),
    onMessage(data, frame) {
      for (const region of regions) insert(region, frame);
    },
    onReset() {
      for (const region of regions) region.replaceChildren();
    },
    // Who is here, and whispers: told as events on the regions (the page shows them).
    onPresence(presence) {
      tell(regions, "live:presence", presence);
    },
    onWhisper(data, from) {
      tell(regions, "live:whisper", { data, from });
    },
  });
  // Resume after what the server rendered: the lowest seq among the topic's regions.
  const rendered = Math.min(...regions.map((r) => Number(r.dataset.seq) || 0));
  if (rendered > 0) subscription.lastSeq = rendered;
}

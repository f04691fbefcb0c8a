// The admin's "Add message": the message rendered by its topic's template as you type (not
// stored until you save).
const box = document.getElementById("message-preview");
const topic = document.getElementById("id_topic");
const data = document.getElementById("id_data");
const csrf = document.querySelector("input[name=csrfmiddlewaretoken]")?.value ?? "";
let timer = null;

async function refresh() {
  const body = new URLSearchParams({ topic: topic.value, data: data.value });
  try {
    const response = await fetch(box.dataset.url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf },
      body,
    });
    const answer = await response.json();
    if (answer.html !== undefined) {
      box.innerHTML = answer.html; // rendered and escaped by the server's template
    } else {
      box.replaceChildren(Object.assign(document.createElement("p"), {
        className: "help", textContent: answer.error,
      }));
    }
  } catch {
    // the next change tries again
  }
}

for (const field of [topic, data]) {
  field?.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  });
  field?.addEventListener("change", refresh);
}
refresh();

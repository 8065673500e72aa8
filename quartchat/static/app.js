// Minimal chat client: history in localStorage, replies streamed from /api/chat/stream.
// Model output is only ever set through textContent, never parsed as HTML.
const STORAGE_KEY = "quartchat.history";
const messagesEl = document.getElementById("messages");
const form = document.getElementById("composer");
const input = document.getElementById("input");
const sendButton = document.getElementById("send");

let history = load();

function load() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "[]");
    return Array.isArray(saved) ? saved : [];
  } catch {
    return [];
  }
}

function save() {
  localStorage.setItem(STORAGE_KEY, JSON.stringify(history));
}

function render(message) {
  const el = document.createElement("div");
  el.className = `message ${message.role}`;
  el.textContent = message.content;
  messagesEl.append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

function* sseEvents(buffer) {
  // Yields [event, data] for each complete block; the caller keeps the remainder.
  let index;
  while ((index = buffer.text.indexOf("\n\n")) !== -1) {
    const block = buffer.text.slice(0, index);
    buffer.text = buffer.text.slice(index + 2);
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    if (data.length) yield [event, JSON.parse(data.join("\n"))];
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  save();
  render(history.at(-1));
  const messages = history.slice();
  // The reply joins the history at once and is saved as it grows, so a reload never loses it.
  const reply = { role: "assistant", content: "" };
  history.push(reply);
  const el = render(reply);
  sendButton.disabled = true;
  try {
    const response = await fetch("/api/chat/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error?.message || `HTTP ${response.status}`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const buffer = { text: "" };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer.text += value;
      for (const [event, data] of sseEvents(buffer)) {
        if (event === "chunk") {
          reply.content += data.delta;
          el.textContent = reply.content;
        } else if (event === "error") {
          throw new Error(data.error.message);
        }
      }
      save();
    }
  } catch (error) {
    el.classList.add("error");
    el.textContent = `${reply.content}\n[${error.message}]`;
    if (!reply.content) history.pop();
    save();
  } finally {
    sendButton.disabled = false;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  send(text);
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});

document.getElementById("new-chat").addEventListener("click", () => {
  history = [];
  save();
  messagesEl.replaceChildren();
});

history.forEach(render);

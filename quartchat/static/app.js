// The chat page's wiring: conversations (store.js), the message list (view.js), the sidebar,
// settings and the streaming client (api.js). State lives here; the other modules render it.

import { ChatError, fetchModels, streamChat } from "./api.js";
import { announce, copyText, flashCopied, h } from "./dom.js";
import { Follower } from "./scroll.js";
import { SettingsPanel, emptySettings, requestOptions } from "./settings.js";
import { Sidebar } from "./sidebar.js";
import { StorageFullError, newId, openStore, summaryOf, titleFrom } from "./store.js";
import { MessageList } from "./view.js";

const $ = (id) => document.getElementById(id);
const DEFAULT_TITLE = "New chat";
const SAVE_EVERY_MS = 1000; // while streaming; a reply is always saved when it ends
const THEMES = ["system", "light", "dark"];

const input = $("input");
const composer = $("composer");
const sendButton = $("send");
const stopButton = $("stop");

function newConversation() {
  const now = Date.now();
  return { id: newId(), title: DEFAULT_TITLE, createdAt: now, updatedAt: now, settings: emptySettings(), messages: [] };
}

const store = await openStore(newConversation, document.body.dataset.owner ?? null);
const streams = new Map(); // conversation id -> {conversation, reply, controller, ended}: replies in flight
const saveTimers = new Map();
let summaries = await store.list();
let current = newConversation();

const view = new MessageList($("messages"), { onAction: messageAction });
const follower = new Follower($("scroller"), $("messages"), $("jump"));
const sidebar = new Sidebar($("conversations"), { onRename: rename, onDelete: remove });
const settings = new SettingsPanel($("settings"), {
  onChange: () => {
    showModelName();
    if (current.messages.length) save(current);
  },
});

// ---- conversations --------------------------------------------------------------------------

/** The live object for a conversation: the open one, one still streaming, or a stored copy. */
async function load(id) {
  if (current.id === id) return current;
  if (streams.has(id)) return streams.get(id).conversation;
  const conversation = await store.get(id);
  if (!conversation) return null;
  conversation.settings = { ...emptySettings(), system: "", ...conversation.settings };
  for (const message of conversation.messages) {
    // A reply that was streaming when the page closed will never finish.
    if (message.status === "streaming") {
      message.status = "error";
      message.error = { message: "This reply was cut off when the page was closed." };
    }
  }
  return conversation;
}

function show(conversation) {
  current = conversation;
  view.show(conversation.messages);
  follower.reset();
  settings.bind(conversation.settings);
  showModelName();
  showTitle();
  $("welcome").hidden = conversation.messages.length > 0;
  sidebar.render(summaries, conversation.id);
  updateComposer();
}

function showTitle() {
  $("chat-title").textContent = current.title;
  document.title = current.messages.length ? `${current.title} · quartchat` : "quartchat";
}

function showModelName() {
  $("model-name").textContent = settings.modelName(current.settings);
}

async function openFromAddress() {
  const id = decodeURIComponent(location.hash.slice(1));
  closeSidebar();
  if (!id) {
    if (current.messages.length) show(newConversation());
    return;
  }
  if (id === current.id) return;
  const conversation = await load(id);
  if (conversation) show(conversation);
  else {
    history.replaceState(null, "", location.pathname);
    show(newConversation());
  }
}

function newChat() {
  closeSidebar();
  if (current.messages.length) {
    history.pushState(null, "", location.pathname);
    show(newConversation());
  }
  input.focus();
}

async function save(conversation) {
  clearTimeout(saveTimers.get(conversation.id));
  saveTimers.delete(conversation.id);
  if (conversation.deleted) return; // a stopped reply of a deleted conversation must not revive it
  try {
    await store.put(conversation);
  } catch (error) {
    if (error instanceof StorageFullError) {
      showBanner(
        `Your browser's storage for this site is full, so the latest changes to “${conversation.title}” are not saved. ` +
          "Delete conversations you no longer need to make room; everything saved before is safe.",
      );
      return;
    }
    showBanner(`Could not save “${conversation.title}”: ${error.message}`);
    return;
  }
  if ($("banner").dataset.kind === "save") hideBanner();
  summaries = [summaryOf(conversation), ...summaries.filter((s) => s.id !== conversation.id)].sort((a, b) => b.updatedAt - a.updatedAt);
  sidebar.render(summaries, current.id);
}

function saveSoon(conversation) {
  if (!saveTimers.has(conversation.id)) saveTimers.set(conversation.id, setTimeout(() => save(conversation), SAVE_EVERY_MS));
}

async function rename(id, title) {
  const conversation = await load(id);
  if (!conversation) return;
  conversation.title = title;
  summaries = summaries.map((s) => (s.id === id ? { ...s, title } : s));
  sidebar.render(summaries, current.id);
  if (conversation === current) showTitle();
  await save(conversation);
}

async function remove(id) {
  const conversation = await load(id);
  if (!conversation) return;
  conversation.deleted = true;
  streams.get(id)?.controller.abort();
  await store.remove(id);
  summaries = summaries.filter((s) => s.id !== id);
  if (current.id === id) {
    history.replaceState(null, "", location.pathname);
    show(newConversation());
  } else sidebar.render(summaries, current.id);
  toast(`Deleted “${conversation.title}”.`, "Undo", async () => {
    delete conversation.deleted;
    await save(conversation);
    location.hash = conversation.id;
  });
  $("new-chat").focus();
}

// ---- replies --------------------------------------------------------------------------------

function updateComposer() {
  const busy = streams.has(current.id);
  sendButton.hidden = busy;
  stopButton.hidden = !busy;
}

/** The messages sent upstream: the system prompt, then every message with text. */
function context(conversation) {
  const messages = [];
  if (conversation.settings.system.trim()) messages.push({ role: "system", content: conversation.settings.system });
  for (const m of conversation.messages) if (m.content) messages.push({ role: m.role, content: m.content });
  return messages;
}

function send(text) {
  const conversation = current;
  if (streams.has(conversation.id)) return;
  if (!conversation.messages.length) {
    conversation.title = titleFrom(text);
    history.replaceState(null, "", `#${conversation.id}`);
    $("welcome").hidden = true;
    showTitle();
  }
  const message = { id: newId(), role: "user", content: text, createdAt: Date.now() };
  conversation.messages.push(message);
  view.append(message);
  generate(conversation);
}

async function generate(conversation) {
  const body = { messages: context(conversation), ...requestOptions(conversation.settings) };
  const reply = {
    id: newId(),
    role: "assistant",
    content: "",
    status: "streaming",
    createdAt: Date.now(),
    model: settings.modelName(conversation.settings),
  };
  conversation.messages.push(reply);
  conversation.updatedAt = Date.now();
  const controller = new AbortController();
  let finished;
  let loggedOut = false; // the session ended elsewhere: log in again, then come back here
  const ended = new Promise((resolve) => (finished = resolve));
  streams.set(conversation.id, { conversation, reply, controller, ended });
  if (conversation === current) {
    view.append(reply);
    follower.reset();
    updateComposer();
    showTitle();
  }
  save(conversation); // the question and the title are kept even if the reply never comes
  announce("quartchat is replying.");
  try {
    const done = await streamChat(body, {
      signal: controller.signal,
      onDelta(delta) {
        reply.content += delta;
        if (conversation === current) view.update(reply);
        saveSoon(conversation);
      },
    });
    reply.content = done.message?.content ?? reply.content;
    reply.status = "done";
    reply.model = done.model ?? reply.model;
    reply.usage = done.usage ?? null;
    reply.finishReason = done.finish_reason ?? null;
  } catch (error) {
    loggedOut = error.code === "UNAUTHENTICATED";
    if (error.name === "AbortError") {
      reply.status = "stopped";
    } else {
      reply.status = "error";
      const lost = error instanceof ChatError && error.kind === "network" && reply.content;
      reply.error = {
        message: lost ? `${error.message} The text above is what arrived.` : error.message || "The reply failed.",
        code: error.code ?? null,
        requestId: error.requestId ?? null,
      };
    }
  } finally {
    streams.delete(conversation.id);
    if (conversation === current) {
      view.updateNow(reply);
      updateComposer();
      announceReply(reply);
    }
    await save(conversation);
    finished();
    if (loggedOut) location.assign(`/login?next=${encodeURIComponent(location.pathname + location.hash).replaceAll("%2F", "/")}`);
  }
}

function announceReply(reply) {
  if (reply.status === "stopped") announce("Reply stopped.");
  else if (reply.status === "error") announce(`Error: ${reply.error.message}`);
  else announce(document.querySelector(`[data-id="${reply.id}"] .content`)?.textContent || reply.content);
}

function stop() {
  streams.get(current.id)?.controller.abort();
}

async function messageAction(action, messageId, { button, text }) {
  const conversation = current;
  const index = conversation.messages.findIndex((m) => m.id === messageId);
  const message = conversation.messages[index];
  if (action === "copy-code") return flashCopied(button, await copyText(text));
  if (!message) return;
  if (action === "copy") return flashCopied(button, await copyText(message.content));
  if (action !== "edit" && streams.has(conversation.id)) {
    // Resending while a reply streams: stop that reply first, as a person would.
    const stream = streams.get(conversation.id);
    stream.controller.abort();
    await stream.ended;
  }
  if (action === "edit") view.startEdit(messageId, message.content);
  else if (action === "save-edit") {
    message.content = text;
    const after = conversation.messages[index + 1];
    conversation.messages.length = index + 1;
    if (after) view.removeFrom(after.id);
    view.updateNow(message);
    view.endEdit(messageId);
    generate(conversation);
  } else if ((action === "regenerate" || action === "retry") && index === conversation.messages.length - 1) {
    conversation.messages.pop();
    view.removeFrom(messageId);
    generate(conversation);
    input.focus();
  }
}

// ---- page furniture -------------------------------------------------------------------------

function showBanner(text, kind = "save") {
  const banner = $("banner");
  banner.dataset.kind = kind;
  banner.querySelector(".banner-text").textContent = text;
  banner.hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
  delete $("banner").dataset.kind;
}

let toastTimer = 0;
function toast(text, actionLabel, action) {
  const box = $("toast");
  clearTimeout(toastTimer);
  const button = h("button", { type: "button", className: "btn" }, actionLabel);
  button.addEventListener("click", () => {
    box.hidden = true;
    action();
  });
  box.replaceChildren(h("span", {}, text), button);
  box.hidden = false;
  toastTimer = setTimeout(() => (box.hidden = true), 8000);
}

function setTheme(theme) {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  try {
    if (theme === "system") localStorage.removeItem("quartchat.theme");
    else localStorage.setItem("quartchat.theme", theme);
  } catch {
    // The choice then lasts for this page only.
  }
  $("theme-name").textContent = theme[0].toUpperCase() + theme.slice(1);
}

const narrow = matchMedia("(max-width: 767px)");

function openSidebar() {
  document.body.classList.add("sidebar-open");
  $("open-sidebar").setAttribute("aria-expanded", "true");
  $("search").focus();
}

function closeSidebar() {
  if (!document.body.classList.contains("sidebar-open")) return;
  document.body.classList.remove("sidebar-open");
  $("open-sidebar").setAttribute("aria-expanded", "false");
}

function autosize() {
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight}px`;
}

// ---- events ---------------------------------------------------------------------------------

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || streams.has(current.id)) return;
  input.value = "";
  autosize();
  send(text);
});

input.addEventListener("input", autosize);
input.addEventListener("keydown", (event) => {
  // On touch keyboards there is no Shift+Enter, so Enter makes a new line and the button sends.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !matchMedia("(pointer: coarse)").matches) {
    event.preventDefault();
    composer.requestSubmit();
  }
});
stopButton.addEventListener("click", () => {
  stop();
  input.focus();
});

$("new-chat").addEventListener("click", newChat);
$("open-settings").addEventListener("click", () => settings.open());
$("open-sidebar").addEventListener("click", openSidebar);
$("close-sidebar").addEventListener("click", closeSidebar);
$("scrim").addEventListener("click", closeSidebar);
$("banner-close").addEventListener("click", hideBanner);
$("theme").addEventListener("click", () => {
  const now = document.documentElement.dataset.theme ?? "system";
  setTheme(THEMES[(THEMES.indexOf(now) + 1) % THEMES.length]);
});

let searchTimer = 0;
$("search").addEventListener("input", (event) => {
  clearTimeout(searchTimer);
  const query = event.target.value;
  searchTimer = setTimeout(async () => sidebar.setFilter(query.trim() ? await store.search(query) : null), 150);
});

document.addEventListener("keydown", (event) => {
  const mod = event.ctrlKey || event.metaKey;
  if (mod && event.shiftKey && event.key.toLowerCase() === "o") {
    event.preventDefault();
    newChat();
  } else if (mod && !event.shiftKey && event.key.toLowerCase() === "k") {
    event.preventDefault();
    if (narrow.matches) openSidebar();
    else $("search").focus();
  } else if (event.key === "Escape" && event.shiftKey) {
    event.preventDefault();
    input.focus();
  } else if (event.key === "Escape" && !$("settings").open) {
    if (streams.has(current.id)) stop();
    else closeSidebar();
  }
});

window.addEventListener("hashchange", openFromAddress);
window.addEventListener("popstate", openFromAddress);
// Replies in flight are saved every second; save the latest text when the page goes away.
window.addEventListener("pagehide", () => {
  for (const { conversation } of streams.values()) save(conversation);
});
store.subscribe(async () => {
  summaries = await store.list();
  sidebar.render(summaries, current.id);
});

if (!store.persistent) {
  showBanner("This browser does not allow this page to store data, so conversations will be lost on reload.", "storage");
}
setTheme(document.documentElement.dataset.theme ?? "system");
show(current);
await openFromAddress();
fetchModels()
  .then((models) => {
    settings.setModels(models);
    showModelName();
  })
  .catch(() => {
    // The default model still works; the picker just has no other choices.
  });
document.body.dataset.ready = "true"; // for tests and for CSS: the page is wired up

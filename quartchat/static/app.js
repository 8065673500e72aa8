// The chat page's wiring: conversations (store.js, saved through sync.js; the store also runs
// the turns, wherever they run), the message list (view.js), the sidebar, settings, import and
// export. State lives here; the other modules render it.

import { fetchModels } from "./api.js";
import { announce, copyText, flashCopied, h, iconButton } from "./dom.js";
import { Follower } from "./scroll.js";
import { SettingsPanel, emptySettings, requestOptions } from "./settings.js";
import { Sidebar } from "./sidebar.js";
import { newId, openStore, titleFrom } from "./store.js";
import { Saver } from "./sync.js";
import { saveFile } from "./transfer.js";
import { TransferDialog } from "./transfer-dialog.js";
import { Tree } from "./tree.js";
import { priceOf, readPrices } from "./usage-format.js";
import { MessageList } from "./view.js";

const $ = (id) => document.getElementById(id);
const DEFAULT_TITLE = "New chat";
const THEMES = ["system", "light", "dark"];
const DRAFT_EVERY_MS = 300;
const SETTINGS_EVERY_MS = 500;
const CUT_OFF = "This reply was cut off when the page was closed.";
const ELSEWHERE = "A reply is still being written in another tab. Wait for it to finish.";
const BUSY = "A reply is still being written. Press Stop (Esc) or wait for it, then send.";

const input = $("input");
const composer = $("composer");
const sendButton = $("send");
const stopButton = $("stop");

function newConversation() {
  const now = Date.now();
  return { id: newId(), title: DEFAULT_TITLE, createdAt: now, updatedAt: now, revision: 0, settings: emptySettings(), leafId: null, messages: [] };
}

const store = await openStore(newConversation, document.body.dataset.owner ?? null);
const streams = new Map(); // conversation -> its run (store.js): the reply in flight, read here
const watched = new Set(); // replies being written in another tab, waited for
let current = newConversation();
let tree = new Tree([]); // the open conversation's messages
let shown = []; // ids of the messages on screen, in order
let versionCounts = new Map(); // message id -> number of versions, as shown
let prices = new Map(); // model -> its price, from GET /api/models (none set: no costs shown)

const view = new MessageList($("messages"), {
  onAction: messageAction,
  versionsOf: (m) => tree.version(tree.byId.get(m.id) ?? m),
  priceOf: (model) => priceOf(prices, model),
});
const follower = new Follower($("scroller"), $("messages"), $("jump"));
const sidebar = new Sidebar($("conversations"), {
  store,
  onRename: rename,
  onDelete: remove,
  noResults: $("no-results"),
  onError: (error) => showBanner("error", `Could not list the conversations: ${error.message}`),
});
const settings = new SettingsPanel($("settings"), {
  picker: $("model-picker"),
  onChange: () => {
    showSystemPrompt();
    if (current.messages.length) saveSettingsSoon(current);
  },
  onProblems: (problems) => {
    if (!problems.length) return hideBanner("settings");
    showBanner("settings", problems.join(" "), { label: "Open settings", run: () => settings.open() });
  },
});
const saver = new Saver(store, {
  mine: () => new Set([...streams.values()].map((run) => run.reply?.id)),
  onMerged: merged,
  onSaved: () => hideBanner("save"),
  onFull: (conversation) =>
    showBanner(
      "save",
      `Your browser's storage for this site is full, so the latest changes to “${conversation.title}” are not saved. ` +
        "Delete conversations you no longer need to make room; everything saved before is safe.",
    ),
  onGone: goneElsewhere,
  onError: (conversation, error) => showBanner("save", `Could not save “${conversation.title}”: ${error.message}`),
});
const transfer = new TransferDialog($("transfer"), { store, current: () => current });

// ---- conversations --------------------------------------------------------------------------

/** This tab's live copy of a conversation, if it holds one: the open one, or one streaming here. */
function held(id) {
  if (current.id === id) return current;
  return [...streams.keys()].find((conversation) => conversation.id === id) ?? null;
}

/** The live object for a conversation: held here, or read from the store. */
async function load(id) {
  const live = held(id);
  if (live) return live;
  const conversation = await store.get(id);
  if (!conversation) return null;
  conversation.settings = { ...emptySettings(), system: "", ...conversation.settings };
  await present(conversation);
  return conversation;
}

/**
 * A reply saved as "streaming" that this tab is not reading is followed live where the store can
 * (on the server: asked for in another tab or device, or by this tab before a reload). Else it
 * is either still being written in another tab, or was cut off when its tab closed. Which one
 * is shown (`presence`, never saved).
 */
async function present(conversation) {
  const mine = saver.mine();
  const streaming = conversation.messages.filter((m) => m.status === "streaming" && !mine.has(m.id));
  for (const message of conversation.messages) if (message.status !== "streaming") delete message.presence;
  if (!streaming.length) return;
  const run = !streams.has(conversation) && store.follow(conversation, streaming.at(-1), hooksFor(conversation));
  if (run) {
    delete streaming.pop().presence;
    track(conversation, run);
    if (!streaming.length) return;
  }
  const live = await store.beingWritten(streaming.map((m) => m.id));
  for (const message of streaming) {
    message.presence = live.has(message.id) ? "elsewhere" : "gone";
    if (live.has(message.id) && !watched.has(message.id)) {
      watched.add(message.id);
      // When that tab is done (or gone), look again.
      store.whenWritten(message.id).then(async () => {
        watched.delete(message.id);
        // That tab saved its last word before letting go, but this tab's copy of the storage
        // can lag a moment behind: look again a few times before calling the reply cut off.
        for (let tries = 0; tries < 8; tries++) {
          const again = held(conversation.id);
          if (!again) return;
          await saver.reload(again);
          if (again.messages.find((m) => m.id === message.id)?.status !== "streaming") break;
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
        const again = held(conversation.id);
        if (again) refreshPresence(again);
      });
    }
  }
}

/** A message as the view shows it: a reply being written elsewhere, or cut off, says so. */
function display(message) {
  if (message.presence === "elsewhere") return { ...message, status: "elsewhere" };
  if (message.presence === "gone") return { ...message, status: "error", error: { message: CUT_OFF } };
  return message;
}

const writtenElsewhere = (conversation) => new Tree(conversation.messages).path(conversation.leafId).some((m) => m.presence === "elsewhere");

async function refreshPresence(conversation) {
  const before = new Map(conversation.messages.map((m) => [m.id, m.presence]));
  await present(conversation);
  if (conversation !== current) return;
  for (const message of conversation.messages) if (before.get(message.id) !== message.presence && shown.includes(message.id)) view.updateNow(display(message));
}

/** Another tab's changes were taken into a conversation this tab holds. */
async function merged(conversation, report) {
  await present(conversation);
  if (conversation !== current) return;
  if (report.title) showTitle();
  if (report.settings) {
    settings.bind(conversation.settings);
    showSystemPrompt();
  }
  const onScreen = new Set(shown);
  if (report.structure) showPath();
  for (const message of report.messages) if (onScreen.has(message.id) && shown.includes(message.id)) view.updateNow(display(message));
  updateComposer();
}

/**
 * Draw the open conversation's path. Only what changed: the messages from the first one that
 * differs are replaced (a new reply, another version); `whole` draws everything (a switch).
 */
function showPath({ whole = false, through = null } = {}) {
  tree = new Tree(current.messages);
  const path = tree.path(current.leafId);
  let same = 0;
  if (!whole) while (same < shown.length && same < path.length && shown[same] === path[same].id) same++;
  if (whole || (same === 0 && shown.length) || path.length - same > 30) {
    view.show(path.map(display), { through });
    versionCounts = new Map(path.map((m) => [m.id, tree.siblings(m).length]));
  } else {
    if (same < shown.length) view.removeFrom(shown[same]);
    for (const message of path.slice(same)) view.append(display(message));
    for (const message of path) {
      const count = tree.siblings(message).length;
      if (versionCounts.has(message.id) && versionCounts.get(message.id) !== count) view.setVersions(message);
      versionCounts.set(message.id, count);
    }
  }
  shown = path.map((m) => m.id);
  $("welcome").hidden = path.length > 0;
}

function show(conversation) {
  saveDraft();
  saveSettings();
  current = conversation;
  const match = landingIn(conversation);
  showPath({ whole: true, through: match });
  follower.reset(); // a conversation opens at its newest message ...
  if (match) land(match); // ... or, from a search result, at the message found
  settings.bind(conversation.settings);
  showSystemPrompt();
  showTitle();
  sidebar.setCurrent(conversation.messages.length ? conversation.id : null);
  updateComposer();
  loadDraft(conversation);
}

let landing = null; // {id, messageId}: the search result chosen, until its conversation opens

/**
 * The message a chosen search result points at, if it is in `conversation`; the version shown
 * becomes the one that holds it.
 */
function landingIn(conversation) {
  if (landing?.id !== conversation.id) return null;
  const { messageId } = landing;
  landing = null;
  const messages = new Tree(conversation.messages);
  if (!messages.byId.has(messageId)) return null;
  if (!messages.path(conversation.leafId).some((m) => m.id === messageId)) {
    conversation.leafId = messages.leafUnder(messageId);
    if (conversation.revision > 0) saver.update(conversation, ["leafId"]);
  }
  return messageId;
}

function land(messageId) {
  if (!view.reveal(messageId)) return;
  follower.hold();
  announce("Showing the message the search found.");
}

// A search result names the message it found: the conversation opens there (the link's own
// navigation opens the conversation; when it is open already, there is none).
$("conversations").addEventListener("click", (event) => {
  const link = event.target.closest?.(".conversation-link[data-message-id]");
  if (!link) return;
  landing = { id: link.closest("[data-id]").dataset.id, messageId: link.dataset.messageId };
  if (landing.id !== current.id) return;
  const match = landingIn(current);
  if (!match) return;
  showPath({ whole: true, through: match });
  land(match);
});

const systemPrompt = h(
  "details",
  { className: "system-prompt", hidden: true },
  h("summary", {}, "A system prompt is set"),
  h("p", { className: "system-prompt-text", dir: "auto" }),
);
$("scroller").prepend(systemPrompt);

/** A system prompt in force is said at the top of the conversation; its text on demand. */
function showSystemPrompt() {
  const text = current.settings.system?.trim() ?? "";
  systemPrompt.hidden = !text;
  systemPrompt.querySelector(".system-prompt-text").textContent = text;
}

function showTitle() {
  $("chat-title").textContent = current.title;
  document.title = current.messages.length ? `${current.title} · quartchat` : "quartchat";
}

const addressed = () => decodeURIComponent(location.hash.slice(1));
let opening = null; // the id being read to be opened

async function openFromAddress() {
  const id = addressed();
  closeSidebar();
  if (!id) {
    if (current.messages.length) show(newConversation());
    return;
  }
  // A link to a conversation fires both popstate and hashchange: it is opened (read, drawn) once.
  if (id === current.id || id === opening) return;
  let conversation;
  opening = id;
  try {
    conversation = await load(id);
  } catch (error) {
    return showBanner("error", `Could not open the conversation: ${error.message}`); // offline: not "not found"
  } finally {
    if (opening === id) opening = null;
  }
  if (addressed() !== id) return; // another was chosen while this one was read
  if (conversation) show(conversation);
  else {
    history.replaceState(null, "", location.pathname);
    show(newConversation());
    toast("That conversation was not found.");
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

let settingsTimer = 0;
let settingsOf = null; // the conversation whose settings changed and are not saved yet

/** Settings change as they are typed (a system prompt): saved once typing pauses. */
function saveSettingsSoon(conversation) {
  if (settingsOf !== conversation) saveSettings();
  settingsOf = conversation;
  clearTimeout(settingsTimer);
  settingsTimer = setTimeout(saveSettings, SETTINGS_EVERY_MS);
}

function saveSettings() {
  clearTimeout(settingsTimer);
  if (settingsOf) saver.update(settingsOf, ["settings"]);
  settingsOf = null;
}

async function rename(id, title) {
  const conversation = await load(id);
  if (!conversation) return;
  conversation.title = title;
  if (conversation === current) showTitle();
  await saver.update(conversation, ["title"]);
}

async function remove(id) {
  const conversation = await load(id);
  if (!conversation) return;
  conversation.deleted = true;
  streams.get(conversation)?.detach();
  await store.remove(id);
  if (current.id === id) {
    history.replaceState(null, "", location.pathname);
    show(newConversation());
  }
  toast(`Deleted “${conversation.title}”.`, "Undo", async () => {
    try {
      await (store.restore ? store.restore(conversation) : store.create(conversation));
    } catch (error) {
      showBanner("save", `Could not restore “${conversation.title}”: ${error.message}`);
      return;
    }
    location.hash = conversation.id;
  });
  $("new-chat").focus();
}

/** Another tab deleted a conversation this tab holds. */
function goneElsewhere(conversation) {
  if (conversation.deleted) return;
  conversation.deleted = true;
  streams.get(conversation)?.detach();
  if (conversation === current) {
    history.replaceState(null, "", location.pathname);
    show(newConversation());
    toast(`“${conversation.title}” was deleted in another tab.`);
  }
}

// ---- drafts: what is typed survives a reload, per conversation ---------------------------------

const draftKey = (conversation) => (conversation.messages.length ? conversation.id : null);
let draftTimer = 0;
let draftOf = current;
let typed = false; // the box changed since its draft was saved or loaded

function saveDraft() {
  clearTimeout(draftTimer);
  if (!typed) return;
  typed = false;
  store.setDraft(draftKey(draftOf), input.value);
}

async function loadDraft(conversation) {
  draftOf = conversation;
  const text = await store.draft(draftKey(conversation));
  if (current !== conversation || typed) return;
  input.value = text;
  autosize();
}

// ---- replies --------------------------------------------------------------------------------

function updateComposer() {
  const busy = streams.has(current);
  sendButton.hidden = busy;
  stopButton.hidden = !busy;
}

/** The messages sent upstream: the system prompt, then the path up to `leafId` that has text. */
function context(conversation, leafId) {
  const messages = [];
  if (conversation.settings.system.trim()) messages.push({ role: "system", content: conversation.settings.system });
  for (const m of new Tree(conversation.messages).path(leafId)) if (m.content) messages.push({ role: m.role, content: m.content });
  return messages;
}

/**
 * The one turn pipeline. `turn` is {kind: "send", content} (from the composer: its text stays
 * there until the store has the turn), {kind: "edit", messageId, content} or {kind:
 * "regenerate", messageId}. Where it runs (this tab, or the server) is the store's business.
 */
function ask(conversation, turn) {
  const draft = turn.kind === "send" ? draftKey(conversation) : undefined;
  if (draft !== undefined) store.setDraft(draft, turn.content); // kept until the store has it
  if (!conversation.messages.length) conversation.title = titleFrom(turn.content);
  let accepted = false;
  const run = store.turn(
    conversation,
    { ...turn, model: settings.modelName(conversation.settings) },
    hooksFor(conversation, () => {
      if (!accepted) {
        accepted = true;
        if (draft !== undefined) {
          store.setDraft(draft, "");
          if (conversation === current && input.value.trim() === turn.content) {
            input.value = "";
            autosize();
            clearTimeout(draftTimer);
            typed = false;
          }
        }
        if (conversation === current && addressed() !== conversation.id) history.replaceState(null, "", `#${conversation.id}`);
        announce("quartchat is replying.");
      }
      if (conversation !== current) return;
      showPath();
      showTitle();
      follower.reset();
      sidebar.setCurrent(conversation.id);
      updateComposer();
      if (turn.kind === "edit") {
        const leaf = tree.byId.get(conversation.leafId);
        view.focusAction(leaf.role === "user" ? leaf.id : leaf.parentId, "edit");
      }
    }),
  );
  track(conversation, run);
  run.ended.catch((error) => {
    if (error.name === "AbortError") return; // stopped before it was sent
    if (error.code === "UNAUTHENTICATED") return logInAgain();
    if (error.code === "TURN_CONFLICT") {
      // A reply is running in this conversation (asked for elsewhere): it is shown, live.
      toast(BUSY);
      if (conversation.revision > 0) saver.reload(conversation);
      return;
    }
    showBanner("save", `Could not send: ${error.message}`); // the text stays in the box
  });
}

/** What the store tells the page of a run in `conversation`, drawn when it is the one open. */
function hooksFor(conversation, onAdded = () => {}) {
  const reply = () => streams.get(conversation)?.reply;
  return {
    saver,
    request: (parentId) => ({ messages: context(conversation, parentId), ...requestOptions(conversation.settings) }),
    onAdded,
    onDelta() {
      if (conversation === current && reply()) view.update(reply());
    },
    onConnection() {
      if (conversation === current && reply()) view.updateNow(reply());
    },
  };
}

/** A run is the reply in flight in its conversation until it ends (or is detached). */
function track(conversation, run) {
  streams.set(conversation, run);
  if (conversation === current) updateComposer();
  const ended = async () => {
    if (streams.get(conversation) === run) streams.delete(conversation);
    const { reply } = run;
    if (conversation === current) {
      if (reply) view.updateNow(reply);
      if (reply && reply.status !== "streaming") announceReply(reply);
      updateComposer();
    }
    if (reply?.error?.code === "UNAUTHENTICATED") return logInAgain();
    // The store has the whole turn (on the server, with a newer revision): take it in.
    if (reply && !conversation.deleted) await saver.reload(conversation);
  };
  run.ended.then(ended, ended);
}

/** The session ended elsewhere: log in again, then come back here. */
function logInAgain() {
  location.assign(`/login?next=${encodeURIComponent(location.pathname + location.hash).replaceAll("%2F", "/")}`);
}

function announceReply(reply) {
  if (reply.status === "stopped") announce("Reply stopped.");
  else if (reply.status === "error") announce(`Error: ${reply.error.message}`);
  // Not the reply itself: thousands of characters (code labels included) read out in one go.
  // The reader finds the reply as the last "quartchat said:" heading.
  else announce("Reply finished.");
}

function stop() {
  streams.get(current)?.stop();
}

/** Show another version of a message: its sibling `step` away, and the newest path under it. */
function switchVersion(conversation, message, step) {
  const siblings = tree.siblings(message);
  const target = siblings[siblings.indexOf(message) + step];
  if (!target) return;
  conversation.leafId = tree.leafUnder(target.id);
  showPath();
  view.focusAction(target.id, step < 0 ? "prev-version" : "next-version");
  const { index, count } = tree.version(target);
  announce(`Version ${index} of ${count}.`);
  saver.update(conversation, ["leafId"]);
}

async function messageAction(action, messageId, { button, text }) {
  const conversation = current;
  const message = tree.byId.get(messageId);
  if (action === "copy-code") return flashCopied(button, await copyText(text));
  if (!message) return;
  if (action === "copy") return flashCopied(button, await copyText(message.content));
  if (action !== "edit" && writtenElsewhere(conversation)) return toast(ELSEWHERE);
  if (action !== "edit" && streams.has(conversation)) {
    // Resending while a reply streams: stop that reply first, as a person would.
    const run = streams.get(conversation);
    run.stop();
    await run.ended.catch(() => {});
  }
  if (action === "edit") view.startEdit(messageId, message.content);
  else if (action === "prev-version" || action === "next-version") switchVersion(conversation, message, action === "prev-version" ? -1 : 1);
  // The edited question is a new version beside the old one, with a reply of its own.
  else if (action === "save-edit") ask(conversation, { kind: "edit", messageId, content: text });
  else if ((action === "regenerate" || action === "retry") && messageId === conversation.leafId && message.role === "assistant") {
    // A new reply beside this one; the old one stays, a version away.
    ask(conversation, { kind: "regenerate", messageId });
    input.focus();
  }
}

// ---- page furniture -------------------------------------------------------------------------

/** One banner per kind ("save", "storage", "unreadable", "error"), with an optional action. */
function showBanner(kind, text, action = null) {
  let banner = $("banners").querySelector(`[data-kind="${kind}"]`);
  if (!banner) {
    const close = iconButton("close", "Dismiss");
    banner = h("div", { className: "banner", role: "alert", dataset: { kind } }, h("p", { className: "banner-text" }), close);
    close.addEventListener("click", () => banner.remove());
    $("banners").append(banner);
  }
  banner.querySelector(".banner-text").textContent = text;
  banner.querySelector(".banner-action")?.remove();
  if (action) {
    const button = h("button", { type: "button", className: "btn banner-action" }, action.label);
    button.addEventListener("click", action.run);
    banner.querySelector(".banner-text").after(button);
  }
}

function hideBanner(kind) {
  $("banners").querySelector(`[data-kind="${kind}"]`)?.remove();
}

async function reportUnreadable() {
  const { count, entries } = await store.problems();
  if (!count) return;
  const text =
    count === 1
      ? "1 stored item could not be read and is not shown. It is kept as it was; you can export it."
      : `${count} stored items could not be read and are not shown. They are kept as they were; you can export them.`;
  showBanner("unreadable", text, {
    label: count === 1 ? "Export it" : "Export them",
    run: () =>
      saveFile(
        "quartchat-unreadable.json",
        JSON.stringify({ format: "quartchat-unreadable", version: 1, exportedAt: new Date().toISOString(), entries }, null, 2),
        "application/json",
      ),
  });
}

let toastTimer = 0;
function toast(text, actionLabel = null, action = null) {
  const box = $("toast");
  clearTimeout(toastTimer);
  const parts = [h("span", {}, text)];
  if (actionLabel) {
    const button = h("button", { type: "button", className: "btn" }, actionLabel);
    button.addEventListener("click", () => {
      box.hidden = true;
      action();
    });
    parts.push(button);
  }
  box.replaceChildren(...parts);
  box.hidden = false;
  hideToastSoon();
}

const TOAST_MS = 8000;

/** The toast goes after a while, but never while it has the pointer or the focus (its Undo). */
function hideToastSoon() {
  const box = $("toast");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    if (!box.matches(":hover, :focus-within")) box.hidden = true;
  }, TOAST_MS);
}

for (const type of ["pointerenter", "focusin"]) $("toast").addEventListener(type, () => clearTimeout(toastTimer));
$("toast").addEventListener("pointerleave", hideToastSoon);
$("toast").addEventListener("focusout", (event) => {
  if (!$("toast").contains(event.relatedTarget)) hideToastSoon();
});

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

/**
 * Typing right after the page opens goes into the message box; not on touch screens, where the
 * focus would pop up the keyboard over the chat, nor when the focus has already gone elsewhere.
 */
function focusOnLoad() {
  if (matchMedia("(pointer: coarse)").matches) return;
  if (document.activeElement && document.activeElement !== document.body) return;
  input.focus({ preventScroll: true });
}

function autosize() {
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight}px`;
}

// ---- events ---------------------------------------------------------------------------------

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  if (streams.has(current)) return toast(BUSY); // never silently: the text stays in the box
  if (writtenElsewhere(current)) return toast(ELSEWHERE); // the text stays in the box
  ask(current, { kind: "send", content: text }); // clears the box once the store has the turn
});

input.addEventListener("input", () => {
  autosize();
  typed = true;
  clearTimeout(draftTimer);
  draftTimer = setTimeout(saveDraft, DRAFT_EVERY_MS);
});
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
$("open-transfer").addEventListener("click", () => transfer.open());
$("open-sidebar").addEventListener("click", openSidebar);
$("close-sidebar").addEventListener("click", closeSidebar);
$("scrim").addEventListener("click", closeSidebar);
$("theme").addEventListener("click", () => {
  const now = document.documentElement.dataset.theme ?? "system";
  setTheme(THEMES[(THEMES.indexOf(now) + 1) % THEMES.length]);
});

let searchTimer = 0;
$("search").addEventListener("input", (event) => {
  clearTimeout(searchTimer);
  const query = event.target.value;
  searchTimer = setTimeout(() => sidebar.setQuery(query), 150);
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
  } else if (event.key === "Escape" && !document.querySelector("dialog[open]")) {
    // Esc in the search box clears it, in the sidebar closes the drawer: only from the message box
    // or the messages (or with nothing focused) does it stop the reply.
    const at = document.activeElement;
    const chatFocused = !at || at === document.body || composer.contains(at) || $("scroller").contains(at);
    if (streams.has(current) && chatFocused) stop();
    else closeSidebar();
  } else if (event.key === "?" && !mod && !typing(event.target) && !document.querySelector("dialog[open]")) {
    event.preventDefault();
    $("shortcuts").showModal();
  }
});

/** Whether keys typed at `target` are text (so `?` is a character, not a shortcut). */
function typing(target) {
  return target instanceof Element && (target.isContentEditable || target.matches("input, textarea, select"));
}

$("skip").addEventListener("click", (event) => {
  event.preventDefault(); // the address names the conversation: "#input" must not replace it
  input.focus();
});

window.addEventListener("hashchange", openFromAddress);
window.addEventListener("popstate", openFromAddress);
window.addEventListener("pagehide", () => {
  saveDraft();
  saveSettings();
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") saveDraft();
});
store.subscribe((change) => {
  if (change.all) {
    sidebar.reset();
    if (change.origin === "elsewhere" && current.revision > 0) saver.reload(current);
  } else if (change.removed) {
    sidebar.remove(change.id);
    const live = change.origin === "elsewhere" && held(change.id);
    if (live) goneElsewhere(live);
  } else {
    if (change.summary) sidebar.upsert(change.summary);
    const live = change.content && change.origin === "elsewhere" && held(change.id);
    if (live) saver.reload(live);
  }
});

// The server store: writes that could not reach the server wait and are retried.
store.onPending?.((waiting) => (waiting ? showBanner("offline", "Not saved — retrying…") : hideBanner("offline")));
store.importedFromBrowser?.then((result) => {
  if (result?.imported) toast(`${result.imported === 1 ? "1 conversation" : `${result.imported} conversations`} kept in this browser now also saved to your account.`);
});
if (!store.persistent) {
  showBanner("storage", "This browser does not allow this page to store data, so conversations will be lost on reload.");
}
setTheme(document.documentElement.dataset.theme ?? "system");
show(current);
await Promise.all([sidebar.reset(), openFromAddress().then(focusOnLoad)]);
fetchModels()
  .then((models) => {
    settings.setModels(models);
    prices = readPrices(models.prices);
    if (prices.size) view.refreshMeta();
  })
  .catch(() => {
    // The default model still works; the picker just has no other choices.
  });
document.body.dataset.ready = "true"; // for tests and for CSS: the page is wired up
reportUnreadable();

// Conversations in and out of the page: our JSON (the same format the server's export uses, so a
// file moves between the two), Markdown (export only), and ChatGPT's `conversations.json`.
//
// An imported file is data, never code or markup: only known fields of the right types are
// taken (schema.js), into fresh objects and Maps (a `__proto__` key is just a name), message ids
// are made anew, sizes and counts are bounded, and what cannot be read is skipped and counted.
// A conversation keeps the file's id (ChatGPT's as `chatgpt:<its id>`, as the server names it),
// so the store can tell one imported before (or one of its own, exported) and skip it; its
// dates, token counts and finish reasons are kept too.
// Imported replies are Markdown like any other and go through the same sanitiser when shown.

import { ID, isRecord, own, readConversation } from "./schema.js";
import { newId } from "./store.js";
import { Tree } from "./tree.js";

export const FORMAT = "quartchat";
export const VERSION = 1;
export const MAX_BYTES = 50 * 1024 * 1024;
const MAX_CONVERSATIONS = 10_000;
const MAX_MESSAGES = 20_000;
const MAX_CONTENT = 1_000_000; // characters of one message
const MAX_TITLE = 300;

// ---- export ------------------------------------------------------------------------------------

function exported(conversation) {
  return {
    id: conversation.id,
    title: conversation.title,
    createdAt: conversation.createdAt,
    updatedAt: conversation.updatedAt,
    settings: conversation.settings,
    leafId: conversation.leafId,
    messages: conversation.messages.map((m) => {
      const message = { id: m.id, parentId: m.parentId, role: m.role, content: m.content, createdAt: m.createdAt };
      if (m.role === "assistant") Object.assign(message, { status: m.status, model: m.model ?? null, usage: m.usage ?? null, finishReason: m.finishReason ?? null, error: m.error ?? null });
      return message;
    }),
  };
}

/** Our JSON, version 1: every message of every version, with the tree. */
export function toJSON(conversations) {
  return JSON.stringify({ format: FORMAT, version: VERSION, exportedAt: new Date().toISOString(), conversations: conversations.map(exported) }, null, 2);
}

/** Each conversation as it is shown (the current version of each message), readable as text. */
export function toMarkdown(conversations) {
  return conversations
    .map((conversation) => {
      const lines = [`# ${conversation.title}`, ""];
      for (const message of new Tree(conversation.messages).path(conversation.leafId)) {
        lines.push(`**${message.role === "user" ? "You" : "Assistant"}:**`, "", message.content, "");
      }
      return lines.join("\n");
    })
    .join("\n---\n\n");
}

/** A safe download name from a title. */
export function fileName(title, extension) {
  const stem = title.replace(/[^\p{L}\p{N}._-]+/gu, "-").replace(/^[-.]+|[-.]+$/g, "").slice(0, 60) || "conversation";
  return `${stem}.${extension}`;
}

/** Offer text as a file download (a Blob behind an object URL: no data in the address). */
export function saveFile(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// ---- import ------------------------------------------------------------------------------------

function timeOf(value) {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) return null;
  return value < 1e11 ? Math.round(value * 1000) : value; // seconds (ChatGPT) or milliseconds (ours)
}

const clip = (text, limit) => (typeof text === "string" && text.trim() ? text.slice(0, limit) : null);

// The server keeps up to 64 characters of a file's id; a longer one (or one that is no id) is
// made anew, and is then not recognised when imported again.
const MAX_KEY = 64;

/** The id an imported conversation takes: the file's, when it is one. */
function keyOf(id) {
  return typeof id === "string" && id.length <= MAX_KEY && ID.test(id) ? id : newId();
}

/**
 * A conversation with its message ids made anew (parents and leaf follow), messages over the size
 * bound left out (their children hang from the nearest message kept). Answers [conversation,
 * skipped].
 */
function renewed(conversation) {
  const byId = new Map(conversation.messages.map((m) => [m.id, m]));
  const kept = conversation.messages.filter((m) => m.content.length <= MAX_CONTENT).slice(0, MAX_MESSAGES);
  const ids = new Map(kept.map((m) => [m.id, newId()]));
  const nearestKept = (id) => {
    const seen = new Set();
    while (id !== null && id !== undefined && !ids.has(id) && !seen.has(id)) {
      seen.add(id);
      id = byId.get(id)?.parentId ?? null;
    }
    return ids.get(id) ?? null;
  };
  const messages = kept.map((m) => ({
    ...m,
    id: ids.get(m.id),
    parentId: nearestKept(m.parentId),
    ...(m.status === "streaming" ? { status: "stopped" } : {}),
  }));
  const leafId = nearestKept(conversation.leafId) ?? messages[messages.length - 1]?.id ?? null;
  return [
    { ...conversation, id: keyOf(conversation.id), title: conversation.title.slice(0, MAX_TITLE), revision: 0, leafId, messages },
    conversation.messages.length - kept.length,
  ];
}

function fromOurs(entry) {
  const read = readConversation(entry);
  if (!read) return null;
  const [conversation, dropped] = renewed(read.conversation);
  return { conversation, skipped: read.skipped + dropped };
}

/** One conversation of ChatGPT's export: a `mapping` of nodes, each a message and its parent. */
function fromChatGPT(entry) {
  const mapping = own(entry, "mapping");
  if (!isRecord(mapping)) return null;
  const createdAt = timeOf(own(entry, "create_time")) ?? Date.now();
  const nodes = new Map(); // node id -> its parent's node id
  const kept = new Map(); // node id -> message
  let skipped = 0;
  for (const key of Object.keys(mapping).slice(0, MAX_MESSAGES * 2)) {
    const node = own(mapping, key);
    if (!isRecord(node)) continue;
    const parent = own(node, "parent");
    nodes.set(key, typeof parent === "string" ? parent : null);
    const message = own(node, "message");
    if (!isRecord(message)) continue; // the root, or an empty node
    const author = own(message, "author");
    const role = isRecord(author) ? own(author, "role") : null;
    const metadata = own(message, "metadata");
    const recipient = own(message, "recipient");
    // System prompts, tools, and what ChatGPT itself hides are not the conversation.
    if ((role !== "user" && role !== "assistant") || (isRecord(metadata) && own(metadata, "is_visually_hidden_from_conversation") === true)) continue;
    if (typeof recipient === "string" && recipient !== "all") continue;
    const content = own(message, "content");
    const parts = isRecord(content) ? own(content, "parts") : null;
    const texts = Array.isArray(parts) ? parts.filter((p) => typeof p === "string") : [];
    const text = texts.join("\n");
    if (!Array.isArray(parts) || texts.length < parts.length || text.length > MAX_CONTENT) skipped += 1; // images, files, …
    if (!text.trim() || text.length > MAX_CONTENT) continue;
    kept.set(key, {
      id: "m", // made anew below
      parentId: null,
      role,
      content: text,
      createdAt: timeOf(own(message, "create_time")) ?? createdAt,
      ...(role === "assistant" ? { status: "done" } : {}),
    });
  }
  const nearestKept = (key) => {
    const seen = new Set();
    while (key !== null && key !== undefined && !kept.has(key) && !seen.has(key)) {
      seen.add(key);
      key = nodes.get(key) ?? null;
    }
    return kept.has(key) ? key : null;
  };
  const ids = new Map([...kept.keys()].map((key) => [key, newId()]));
  const messages = [...kept]
    .map(([key, message]) => ({ ...message, id: ids.get(key), parentId: ids.get(nearestKept(nodes.get(key))) ?? null }))
    .sort((a, b) => a.createdAt - b.createdAt)
    .slice(0, MAX_MESSAGES);
  const key = own(entry, "conversation_id") ?? own(entry, "id");
  const read = readConversation({
    id: typeof key === "string" && key ? keyOf(`chatgpt:${key}`) : newId(),
    title: clip(own(entry, "title"), MAX_TITLE) ?? "Imported chat",
    createdAt,
    updatedAt: timeOf(own(entry, "update_time")) ?? createdAt,
    settings: {},
    leafId: ids.get(nearestKept(own(entry, "current_node"))) ?? null,
    messages,
  });
  return read && { conversation: read.conversation, skipped: skipped + read.skipped + (kept.size - messages.length) };
}

/**
 * The conversations in a file's text: ours or ChatGPT's. Answers {conversations, skipped (items
 * left out), problems (sentences for the person)}.
 */
export function readImport(text) {
  let document;
  try {
    document = JSON.parse(text);
  } catch {
    return { conversations: [], skipped: 0, problems: ["The file is not JSON."] };
  }
  let entries;
  let parse;
  if (Array.isArray(document)) {
    entries = document; // ChatGPT's conversations.json is a list
    parse = fromChatGPT;
  } else if (isRecord(document) && own(document, "format") === FORMAT) {
    if (own(document, "version") !== VERSION) return { conversations: [], skipped: 0, problems: [`This file is of a version of quartchat's format this page cannot read (version ${VERSION} is read).`] };
    entries = own(document, "conversations");
    parse = fromOurs;
    if (!Array.isArray(entries)) return { conversations: [], skipped: 0, problems: ["The file has no list of conversations."] };
  } else {
    return { conversations: [], skipped: 0, problems: ["This is neither a quartchat export nor ChatGPT's conversations.json."] };
  }
  const conversations = [];
  const problems = [];
  let skipped = Math.max(0, entries.length - MAX_CONVERSATIONS);
  if (skipped) problems.push(`Only the first ${MAX_CONVERSATIONS.toLocaleString()} conversations were read.`);
  for (const entry of entries.slice(0, MAX_CONVERSATIONS)) {
    const read = isRecord(entry) ? parse(entry) : null;
    if (!read) {
      skipped += 1;
      continue;
    }
    skipped += read.skipped;
    conversations.push(read.conversation);
  }
  return { conversations, skipped, problems };
}

// What a conversation and a message look like, checked wherever they come from outside this
// page's own memory: browser storage (which other versions of the page, other tabs, extensions
// or a person with the developer tools may have written) and imported files. A reader copies
// only known fields of the right types into fresh objects, so nothing else (no `__proto__`, no
// markup-bearing field) travels further, and one bad entry costs that entry, never the page.
//
//   conversation: {id, title, createdAt, updatedAt, revision, settings, leafId, messages}
//   message:      {id, parentId, role: "user"|"assistant", content, createdAt,
//                  and for replies: status, model, usage, finishReason, error}
//
// Times are milliseconds since the epoch. `revision` counts the conversation's saved changes.

export const ID = /^[\w.:-]{1,100}$/;
const STATUSES = new Set(["streaming", "done", "stopped", "error"]);
// Statuses of the server's store and of exports made by it.
const STATUS_ALIASES = { complete: "done", interrupted: "error" };

export const isRecord = (value) => typeof value === "object" && value !== null && !Array.isArray(value);
/** A field only if the object has it itself (never one inherited, e.g. through `__proto__`). */
export const own = (record, key) => (Object.hasOwn(record, key) ? record[key] : undefined);
const isTime = (value) => typeof value === "number" && Number.isFinite(value) && value >= 0;
const isCount = (value) => Number.isInteger(value) && value >= 0;
const text = (value) => (typeof value === "string" ? value : null);

function readNumber(value, low, high, integer = false) {
  if (typeof value !== "number" || !Number.isFinite(value) || value < low || value > high) return null;
  return integer && !Number.isInteger(value) ? null : value;
}

export function readSettings(raw) {
  const settings = isRecord(raw) ? raw : {};
  return {
    model: text(own(settings, "model")) ?? "",
    temperature: readNumber(own(settings, "temperature"), 0, 2),
    top_p: readNumber(own(settings, "top_p"), 0, 1),
    max_tokens: readNumber(own(settings, "max_tokens"), 1, 2 ** 31, true),
    system: text(own(settings, "system")) ?? "",
  };
}

function readUsage(raw) {
  if (!isRecord(raw)) return null;
  const usage = {};
  for (const name of ["prompt_tokens", "completion_tokens", "total_tokens"]) {
    const value = own(raw, name);
    if (!isCount(value)) return null;
    usage[name] = value;
  }
  return usage;
}

function readError(raw) {
  if (!isRecord(raw) || typeof own(raw, "message") !== "string") return null;
  const error = { message: raw.message, code: text(own(raw, "code")), requestId: text(own(raw, "requestId")) };
  const retryAt = own(raw, "retryAt"); // when Retry may be pressed (a rate limit's Retry-After)
  if (Number.isFinite(retryAt)) error.retryAt = retryAt;
  return error;
}

/** A message, or null when it is not one. `parentId` is checked by `readConversation`. */
export function readMessage(raw) {
  if (!isRecord(raw)) return null;
  const id = own(raw, "id");
  const role = own(raw, "role");
  const content = own(raw, "content");
  if (typeof id !== "string" || !ID.test(id) || (role !== "user" && role !== "assistant") || typeof content !== "string") return null;
  const parentId = own(raw, "parentId");
  const message = {
    id,
    parentId: typeof parentId === "string" ? parentId : null,
    role,
    content,
    createdAt: isTime(own(raw, "createdAt")) ? raw.createdAt : 0,
  };
  if (role === "user") return message;
  let status = own(raw, "status");
  status = STATUS_ALIASES[status] ?? status;
  message.status = STATUSES.has(status) ? status : "done";
  message.model = text(own(raw, "model"));
  message.usage = readUsage(own(raw, "usage"));
  message.finishReason = text(own(raw, "finishReason"));
  message.error = readError(own(raw, "error"));
  if (message.status === "error" && !message.error) message.error = { message: "This reply was interrupted.", code: null, requestId: null };
  return message;
}

/**
 * Point each message's parent at a message that exists, and break any cycle, so that every
 * walk up the tree ends. In linear time, whatever the order of the array.
 */
function repairParents(messages, byId) {
  const state = new Map(); // id -> 1 being walked, 2 known to reach a root
  for (const start of messages) {
    const walked = [];
    let message = start;
    while (message && !state.has(message.id)) {
      state.set(message.id, 1);
      walked.push(message);
      if (message.parentId !== null && !byId.has(message.parentId)) message.parentId = null;
      const parent = message.parentId === null ? null : byId.get(message.parentId);
      if (parent && state.get(parent.id) === 1) {
        message.parentId = null; // the edge that closes a cycle
        break;
      }
      message = parent;
    }
    for (const m of walked) state.set(m.id, 2);
  }
}

/**
 * A conversation, or null when the entry is not one at all. `skipped` counts the messages that
 * could not be read and were left out. Conversations of the page's first format (a flat list of
 * messages, no `parentId`) become a tree on the way in: each message answers the one before.
 */
export function readConversation(raw) {
  if (!isRecord(raw)) return null;
  const id = own(raw, "id");
  const rawMessages = own(raw, "messages");
  if (typeof id !== "string" || !ID.test(id) || !Array.isArray(rawMessages)) return null;
  const flat = !rawMessages.some((m) => isRecord(m) && Object.hasOwn(m, "parentId"));
  const messages = [];
  const byId = new Map();
  let skipped = 0;
  for (const item of rawMessages) {
    const message = readMessage(item);
    if (!message || byId.has(message.id)) {
      skipped += 1;
      continue;
    }
    if (flat) message.parentId = messages.length ? messages[messages.length - 1].id : null;
    messages.push(message);
    byId.set(message.id, message);
  }
  repairParents(messages, byId);
  const createdAt = isTime(own(raw, "createdAt")) ? raw.createdAt : 0;
  const leafId = own(raw, "leafId");
  const title = text(own(raw, "title"));
  return {
    conversation: {
      id,
      title: title?.trim() ? title : "New chat",
      createdAt,
      updatedAt: isTime(own(raw, "updatedAt")) ? raw.updatedAt : createdAt,
      revision: isCount(own(raw, "revision")) ? raw.revision : 0,
      settings: readSettings(own(raw, "settings")),
      leafId: byId.has(leafId) ? leafId : (messages[messages.length - 1]?.id ?? null),
      messages,
    },
    skipped,
    flat,
  };
}

/** An entry of the list of conversations, or null. */
export function readSummary(raw) {
  if (!isRecord(raw)) return null;
  const id = own(raw, "id");
  const title = own(raw, "title");
  const updatedAt = own(raw, "updatedAt");
  if (typeof id !== "string" || !ID.test(id) || typeof title !== "string" || !isTime(updatedAt)) return null;
  return { id, title, updatedAt };
}

export function summaryOf(conversation) {
  return { id: conversation.id, title: conversation.title, updatedAt: conversation.updatedAt };
}

/**
 * What is wrong with a stored conversation entry (its key's id and its raw JSON), or null:
 * {reason, whole: true} when it cannot be read at all, {reason, skipped} when some of its
 * messages cannot.
 */
export function problemOf(id, raw) {
  let value;
  try {
    value = JSON.parse(raw);
  } catch {
    return { reason: "not JSON", whole: true };
  }
  const read = readConversation(value);
  if (!read || read.conversation.id !== id) return { reason: "not a conversation", whole: true };
  return read.skipped ? { reason: `${read.skipped} unreadable message(s)`, skipped: read.skipped } : null;
}

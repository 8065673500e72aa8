// Conversation storage: the only module that knows where conversations live, and so where a
// turn runs. This module chooses the store; store/local.js is the browser's, store/server.js the
// server's, store/common.js what both share.
//
// The rest of the page uses this interface and nothing else. Every method returns a Promise and
// speaks in plain JSON-able objects, so a server-backed store (the API's /conversations) can take
// this one's place without touching the UI. Shapes are in schema.js; a Summary is
// {id, title, updatedAt}.
//
// Reading
//   list({after, limit})              -> {items: Summary[], next}: most recently updated first,
//                                        `limit` (default 50) at a time; `next` is an opaque
//                                        cursor to pass back as `after`, null after the last page
//   search(text, {after, limit})      -> {items, next}: conversations whose title or any message
//                                        (any version) contains `text`, any case; paged the same;
//                                        an item found by a message names it (`messageId`)
//   get(id)                           -> the whole conversation (every message of its tree), or null
//
// Writing. A conversation has a revision, raised by every saved change. Each write names the
// revision the caller last saw; if the conversation has changed since (another tab, another
// device), the write is refused with ConflictError(current revision) and nothing is written:
// the caller reloads (get), re-applies its change and tries again. Each answers
// {revision, updatedAt}.
//   create(conversation)                                  a new conversation (ConflictError if
//                                                          the id is taken)
//   replace(conversation, {revision})                     the whole conversation, as the caller has it
//   appendMessage(id, message, {revision})                a message (its parentId must exist, or
//                                                          be null); it becomes the leaf; updatedAt = now
//   updateMessage(id, messageId, fields, {revision})      content, status, model, usage, finishReason, error
//   update(id, {title?, settings?, leafId?}, {revision})
//   remove(id)
//   importAll(conversations)       -> {created, skipped, full}: many new conversations at once
//                                     (import); one whose id is taken (imported before, or
//                                     this store's own, exported) is skipped and counted
// Writes reject with StorageFullError when out of space (the saved version stays as it was) and
// NotFoundError when the conversation is gone.
//
// Changes
//   subscribe(callback)            -> unsubscribe. callback({id, origin, summary?, removed?,
//                                     content?}) for every change, this tab's ("here") and others'
//                                     ("elsewhere"): a new or changed summary, a removed
//                                     conversation, or (elsewhere) changed content;
//                                     {all: true} when anything may have changed.
//
// Turns: the store decides where a reply is written (the page has one turn pipeline)
//   turn(conversation, turn, hooks) -> Run. `turn`: {kind: "send", content}, {kind: "edit",
//                                     messageId, content} (a new version of a question) or
//                                     {kind: "regenerate", messageId} (a new version of a reply);
//                                     `model`: the model named on the reply until it says.
//                                     The store puts the question and the reply into
//                                     `conversation.messages` (and moves its leaf), and saves them.
//   follow(conversation, reply, hooks) -> Run, or null when this store cannot read a reply
//                                     being written elsewhere (the browser's: another tab writes it;
//                                     the page then waits with beingWritten / whenWritten below)
//   hooks: {saver (sync.js's, for this conversation's writes), request(parentId) -> the body of
//          /api/chat/stream for a reply to that message (the browser's store asks the upstream
//          itself), onAdded() (messages were added: the first call means the turn was accepted),
//          onDelta() (run.reply's text changed), onConnection() (run.reply.reconnecting changed)}
//   Run: {reply (the reply being written, once known), ended (a Promise: settles once the reply
//         ended, its status and fields set: "done", "stopped" or "error"; or once detached;
//         rejects when the turn was refused before it was accepted), stop() (end the reply
//         where it is written: "stopped"), detach() (stop reading it here; on the server it goes on)}
//
// Replies being written by another tab (the browser's store)
//   writing(messageId)             -> release(): this tab is writing that reply until it releases
//   beingWritten(messageIds)       -> Set of those someone is still writing
//   whenWritten(messageId)         -> resolves once nobody is writing it (done, or its tab gone)
//
// This browser only (even with a server store)
//   draft(id) / setDraft(id, text) -> the unsent text of a conversation (id null: a new chat)
//   problems()                     -> {count, entries: [{key, value, reason}]}: stored entries
//                                     that could not be read (whole, as stored, for export)
//   persistent                     -> false when nothing survives a reload (storage blocked)
//
// With an owner (a logged-in user), openStore returns the server's store instead
// (store/server.js: the same interface over /api/conversations, where a turn is a run on the
// server that any tab can follow and stop); this browser's store then keeps only drafts, and the
// conversations it held are imported to the server once.
//
// The browser's store (store/local.js) uses localStorage: one key per conversation (written whole: `setItem`
// replaces a value atomically, so a write that does not fit fails without touching what was
// saved, and the quota error is immediate) plus a small index of summaries, kept in memory and
// rebuilt from the conversation keys if it ever misses one. A write reads, checks the revision
// and writes in one synchronous step, so it is never left half done when the page closes. Tabs
// hear of each other's writes through the `storage` event. Each tab's localStorage is a copy the
// browser keeps in step a moment later, so two tabs writing within that moment can both pass the
// check; the one whose write was overwritten finds its message missing when it takes in the
// other's (sync.js) and saves the union: nothing is lost, it is only saved twice.


import { openLocalStore } from "./store/local.js";

export { ConflictError, NotFoundError, StorageFullError, newId, titleFrom } from "./store/common.js";

/**
 * The conversation store: for `owner` (the logged-in user's id) the server's (store/server.js),
 * which first imports, once, what this browser kept for that user; without accounts (owner
 * null), or with `{server: false}`, this browser's. `newConversation` builds an empty
 * conversation (used to import the first version's single history). Never rejects: what cannot
 * be read is skipped (see problems()).
 */
export async function openStore(newConversation, owner = null, { server = owner !== null } = {}) {
  const local = await openLocalStore(newConversation, owner);
  if (!server) return local;
  const { ServerStore, importFromBrowser } = await import("./store/server.js");
  const remote = new ServerStore(local);
  // In the background: the page starts with what the server has, and lists again once it is in.
  remote.importedFromBrowser = local.persistent
    ? importFromBrowser(local, remote, local.storage, local.prefix).catch(() => null)
    : Promise.resolve(null);
  return remote;
}

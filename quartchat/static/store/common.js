// What every part of the store shares: its errors and ids. (A module of its own so that
// store.js, local.js and server.js import it and not each other.)

export class StorageFullError extends Error {
  constructor() {
    super("Browser storage is full");
    this.name = "StorageFullError";
  }
}

export class ConflictError extends Error {
  constructor(revision) {
    super(`The conversation changed meanwhile (it is at revision ${revision})`);
    this.name = "ConflictError";
    this.revision = revision;
  }
}

export class NotFoundError extends Error {
  constructor(id) {
    super(`No conversation ${id}`);
    this.name = "NotFoundError";
  }
}

export function isQuotaError(error) {
  return (
    error instanceof DOMException &&
    (error.name === "QuotaExceededError" || error.name === "NS_ERROR_DOM_QUOTA_REACHED" || error.code === 22 || error.code === 1014)
  );
}

/** A unique id. (crypto.randomUUID needs a secure context; a LAN address over http is not one.) */
export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Date.now().toString(36) + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A title from the first message: its first line, trimmed to about 60 characters. */
export function titleFrom(text) {
  const line = text.trim().split("\n")[0].replace(/\s+/g, " ");
  return line.length > 60 ? `${line.slice(0, 57).trimEnd()}…` : line || "New chat";
}

/** A reply that ended well: its final text and what the `done` event says of it. */
export function replyDone(reply, done) {
  reply.content = done.message?.content ?? reply.content;
  reply.status = "done";
  reply.model = done.model ?? reply.model;
  reply.usage = done.usage ?? null;
  reply.finishReason = done.finish_reason ?? null;
  delete reply.reconnecting;
}

/**
 * A reply that ended otherwise. Stopped (this tab's Stop, or the server's `REPLY_STOPPED` from
 * any tab's) is no error: the text so far stays, said to be stopped.
 */
export function replyFailed(reply, error) {
  delete reply.reconnecting;
  if (error.name === "AbortError" || error.code === "REPLY_STOPPED") {
    reply.status = "stopped";
    return;
  }
  reply.status = "error";
  const lost = error.kind === "network" && reply.content;
  const message = lost ? `${error.message} The text above is what arrived.` : error.message || "The reply failed.";
  reply.error = { message, code: error.code ?? null, requestId: error.requestId ?? null };
  if (error.retryAt) reply.error.retryAt = error.retryAt; // a 429's Retry-After: Retry stays off till then
}

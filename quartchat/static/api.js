// The server's API as the page uses it: the model list, and a chat reply streamed as
// server-sent events read from a fetch body (EventSource cannot POST, nor be aborted per request,
// nor tell a dropped connection from a refusal). Each event of a reply carries an id, which the
// caller keeps and echoes to resume (followReply); ids are never computed here.

const seconds = (n) => (n === 1 ? "1 second" : n < 120 ? `${n} seconds` : `${Math.round(n / 60)} minutes`);

/**
 * Why a request failed. `kind`: "http" (error status), "stream" (an `error` event), "network".
 * `retryAfter`: the seconds the server asked to wait (a 429's `Retry-After`), else null; with
 * it, `retryAt` (ms since the epoch) is when retrying makes sense again, and the message says
 * how long to wait (the same words in both stores, and after a reload).
 */
export class ChatError extends Error {
  constructor(message, { kind, code = null, status = null, requestId = null, retryAfter = null, details = null }) {
    super(retryAfter ? `${message.replace(/([^.!?])$/, "$1.")} Wait ${seconds(retryAfter)} before retrying.` : message);
    this.name = "ChatError";
    this.kind = kind;
    this.code = code;
    this.status = status;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
    this.details = details; // the error's `details`, e.g. a TURN_CONFLICT's running reply
    this.retryAt = retryAfter ? Date.now() + retryAfter * 1000 : null;
  }
}

/** Seconds to wait from a `Retry-After` value (delay-seconds or an HTTP date), else null. */
export function secondsToWait(value, now = Date.now()) {
  if (!value) return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

/** An incremental parser of the `text/event-stream` format: push text, get complete events. */
export class SSEParser {
  #buffer = "";
  #event = "";
  #data = [];
  #id = null; // the last event id, as the standard keeps it: an event without one inherits it

  /** Feed decoded text; returns the events it completed, as {event, data, id} with data a string. */
  push(text) {
    const events = [];
    this.#buffer += text;
    const lineEnd = /\r\n|\r|\n/g;
    let start = 0;
    for (let match; (match = lineEnd.exec(this.#buffer)); ) {
      // A CR at the very end may be the first half of a CRLF split across reads.
      if (match[0] === "\r" && match.index === this.#buffer.length - 1) break;
      this.#line(this.#buffer.slice(start, match.index), events);
      start = lineEnd.lastIndex;
    }
    this.#buffer = this.#buffer.slice(start);
    return events;
  }

  #line(line, events) {
    if (line === "") {
      if (this.#data.length) events.push({ event: this.#event || "message", data: this.#data.join("\n"), id: this.#id });
      this.#event = "";
      this.#data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment, e.g. the server's `: ping`
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.#event = value;
    else if (field === "data") this.#data.push(value);
    else if (field === "id" && !value.includes("\0")) this.#id = value;
  }
}

export async function errorFromResponse(response) {
  let error = {};
  try {
    error = (await response.json()).error ?? {};
  } catch {
    // Not our JSON (a proxy's HTML error page, say): the status is all there is.
  }
  const message = error.message || `The server answered ${response.status} ${response.statusText}`.trim();
  return new ChatError(message, {
    kind: "http",
    code: error.code ?? null,
    status: response.status,
    requestId: error.request_id ?? response.headers.get("X-Request-ID"),
    retryAfter: secondsToWait(response.headers.get("Retry-After")),
    details: Array.isArray(error.details) ? error.details : null,
  });
}

/** `{default, models, any_model, warnings, prices}` from GET /api/models. */
export async function fetchModels() {
  const response = await fetch("/api/models", { headers: { Accept: "application/json" } });
  if (!response.ok) throw await errorFromResponse(response);
  return response.json();
}

/**
 * Stream one reply. Calls `onDelta(text)` for each piece and resolves with the `done` envelope
 * ({id, model, message, finish_reason, usage}). Rejects with a ChatError, or with the signal's
 * AbortError when the caller aborted (which closes the connection, so the server cancels the
 * upstream request).
 */
export function streamChat(body, { signal, onDelta }) {
  return streamReply("/api/chat/stream", body, { signal, onDelta });
}

/**
 * The same for any route that answers with our reply events (a conversation's turn on the
 * server). `onResponse(response)` is called once the server accepted the request (a 2xx status,
 * or an error status that names the turn's reply), before the first event (or the rejection):
 * its headers name what the turn made. `onId(id)` hears each event's id right after the event
 * was handled (so the text and the id the caller keeps always match).
 */
export async function streamReply(url, body, { signal, onDelta, onResponse = null, onId = null }) {
  const response = await request(url, { method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" }, body: JSON.stringify(body), signal });
  if (!response.ok) {
    const error = await errorFromResponse(response);
    // A turn on the server that failed once begun (the upstream refused it) answers an error
    // that names its messages: the question and the failed reply are saved, so the caller
    // shows them, with the error in the reply, rather than offering to send the question again.
    if (response.headers.has("Quartchat-Reply-Id")) onResponse?.(response);
    throw error;
  }
  onResponse?.(response);
  return readReply(response, { signal, onDelta, onId });
}

/**
 * Follow a reply's events from after `after` (an id heard before, or null for the start): the
 * rest of the reply, live, to its end. Resolves and rejects as streamReply; a reply that had
 * ended before `after` answers nothing more, which resolves with null.
 */
export async function followReply(url, { after = null, signal, onDelta, onId = null }) {
  const headers = { Accept: "text/event-stream" };
  if (after) headers["Last-Event-ID"] = after;
  const response = await request(url, { headers, signal });
  if (!response.ok) throw await errorFromResponse(response);
  return readReply(response, { signal, onDelta, onId, empty: after?.endsWith(".end") });
}

async function request(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    if (init.signal?.aborted) throw error;
    throw new ChatError("Could not reach the server. Check the connection and retry.", { kind: "network" });
  }
}

/** Read a reply's events to its end: the `done` envelope, or a ChatError (an `error` event, or a dropped connection). */
async function readReply(response, { signal, onDelta, onId, empty = false }) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SSEParser();
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (signal?.aborted) throw error;
        throw new ChatError("The connection dropped before the reply finished.", { kind: "network" });
      }
      if (chunk.done) break;
      for (const { event, data, id } of parser.push(chunk.value)) {
        if (event === "chunk") {
          onDelta(JSON.parse(data).delta);
          if (id !== null) onId?.(id);
        } else if (event === "done") {
          if (id !== null) onId?.(id);
          return JSON.parse(data);
        } else if (event === "error") {
          if (id !== null) onId?.(id);
          const error = JSON.parse(data).error ?? {};
          throw new ChatError(error.message || "The reply failed.", {
            kind: "stream",
            code: error.code ?? null,
            requestId: error.request_id ?? null,
          });
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  if (empty) return null;
  throw new ChatError("The connection closed before the reply finished.", { kind: "network" });
}

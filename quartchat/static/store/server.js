// The conversation store of a logged-in user: the server's /api/conversations behind the
// interface store.js describes, chosen by openStore when there is an owner.
//
// What differs from the browser's store:
// - The server writes messages itself, and a reply is a run on the server: it goes on when the
//   page closes or the connection drops, until it ends or someone presses Stop (in any tab, on
//   any device). turn() asks for one (the server saves the question, and the reply as it
//   streams), follow() reads one already running, from where this tab had it; a run's stop()
//   asks the server to stop it. appendMessage and updateMessage are not for this store.
// - Every event of a reply has an id. The last one heard is kept with the text it goes with, and
//   a dropped connection resumes from it (after 0.5 s doubling to 10 s, with jitter; at once when
//   the browser is back online or the page back in view): no piece is lost or shown twice. When
//   the page goes away or out of view (a reload, a phone putting it in the background) the id and
//   the text are kept in this tab's sessionStorage, so the next page goes on from there; without
//   them it reads the reply from its start, which replaces the text it loaded.
// - Ids are the server's. A new conversation gets its id from `create()` (the page's own id goes
//   along as `client_id`, so a retried create makes one conversation).
// - Changes made elsewhere (another device, another tab) come from polling the change feed every
//   few seconds, and at once when the page comes back into view; the page then follows a reply
//   another tab or device started (follow()).
// - A write that cannot reach the server (offline, or a gateway error) is not given up: it is
//   retried every few seconds and at once when the browser is back online, and `onPending`
//   listeners hear how many writes are waiting, so the page can say so. Writes of one
//   conversation are queued by the caller (sync.js), so they still land in order.
// - Drafts and unreadable entries stay in this browser (the local store underneath).

import { ChatError, errorFromResponse, followReply, streamReply } from "../api.js";
import { readConversation } from "../schema.js";
import { ConflictError, NotFoundError, newId, replyDone, replyFailed } from "./common.js";

const POLL_MS = 3000;
const BACKOFF_MS = 500; // the first wait before resuming a dropped reply, doubled each time ...
const BACKOFF_MAX_MS = 10_000; // ... up to this
const STALE_MS = 20_000; // a reply's connection silent this long (pings come every 15 s) is dead
const KEPT = "quartchat.run."; // sessionStorage: a reply's last event id and its text, by reply id
const RETRY_MS = 3000;
const PAGE = 50;
const TRANSIENT = new Set([502, 503, 504]); // a proxy or a restarting service: worth trying again

/** An error of the way to the service, not of the service: no connection, or a gateway's error page. */
function unreached(error) {
  return error instanceof ChatError && (error.kind === "network" || (TRANSIENT.has(error.status) && !error.code));
}
const EPOCH = "1970-01-01T00:00:00+00:00";

const time = (iso) => Date.parse(iso);

function summaryFrom(item) {
  return { id: item.id, title: item.title, updatedAt: time(item.updated_at) };
}

/** The server's settings as the page keeps them, and back. */
function settingsFrom(settings = {}) {
  return {
    model: settings.model ?? "",
    temperature: settings.temperature ?? null,
    top_p: settings.top_p ?? null,
    max_tokens: settings.max_tokens ?? null,
    system: settings.system ?? "",
  };
}

function settingsTo(settings = {}) {
  const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);
  return {
    model: settings.model || null,
    system: settings.system ?? "",
    temperature: number(settings.temperature),
    top_p: number(settings.top_p),
    max_tokens: Number.isInteger(settings.max_tokens) ? settings.max_tokens : null,
  };
}

/**
 * A conversation of the API as the page's data model (checked like anything read). `waits`:
 * replies refused by a rate limit, as this browser heard it (see ServerStore's #waits).
 */
function conversationFrom(raw, waits = {}) {
  const read = readConversation({
    id: raw.id,
    title: raw.title,
    createdAt: time(raw.created_at),
    updatedAt: time(raw.updated_at),
    revision: raw.revision,
    settings: settingsFrom(raw.settings),
    leafId: raw.leaf_id,
    messages: raw.messages.map((m) => ({
      id: m.id,
      parentId: m.parent_id,
      role: m.role,
      content: m.content,
      createdAt: time(m.created_at),
      status: m.status, // complete -> done, interrupted -> error (schema.js)
      model: m.model,
      usage: m.usage,
      finishReason: m.finish_reason,
      error: m.error ? { message: m.error.message, code: m.error.code, ...waits[m.id] } : null,
    })),
  });
  return read?.conversation ?? null;
}

export class ServerStore {
  persistent = true;

  #local;
  #listeners = new Set();
  #pendingListeners = new Set();
  #waiting = 0; // writes waiting to be retried
  #wake = new Set(); // retries waiting for the next try
  #since = null; // the change feed's position
  #polling = false;
  #pollTimer = 0;
  #inPoll = null;
  #runs = new Set(); // the replies this tab is reading

  /** `local`: this browser's store, for drafts and what could not be read. */
  constructor(local) {
    this.#local = local;
    window.addEventListener("online", () => this.#retryNow());
    // A phone's page in the background may hold a connection that is long dead: back in view, a
    // reply that has heard nothing for a while connects again (from its last id).
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") return this.#keepRuns();
      this.#retryNow();
      for (const run of this.#runs) if (performance.now() - run.heard > STALE_MS) run.attempt?.abort();
    });
    window.addEventListener("pagehide", () => this.#keepRuns());
  }

  // ---- rate limits: how long to wait before retrying, kept in this browser --------------------

  // The server keeps a refused reply's code and message; the wait its 429 asked for is known only
  // to the page that got the answer. It is kept here (this browser's storage, by reply id, until
  // the wait is over), so Retry stays off for as long as asked, across a reload and in other tabs.

  get #waitsKey() {
    return `${this.#local.prefix}waits`;
  }

  /** {replyId: {message, requestId, retryAt}} of the waits not over yet. */
  #waits() {
    let waits = {};
    try {
      waits = JSON.parse(this.#local.storage.getItem(this.#waitsKey) || "{}") ?? {};
    } catch {
      // Unreadable: as if nothing waits.
    }
    const now = Date.now();
    return Object.fromEntries(Object.entries(waits).filter(([, wait]) => wait?.retryAt > now));
  }

  #keepWait(replyId, error) {
    const waits = { ...this.#waits(), [replyId]: { message: error.message, requestId: error.requestId, retryAt: error.retryAt } };
    try {
      this.#local.storage.setItem(this.#waitsKey, JSON.stringify(waits));
    } catch {
      // Full: the wait is shown until a reload.
    }
  }

  // ---- talking to the server -------------------------------------------------------------------

  /** One request; an answer that is not a 2xx rejects (ChatError, ConflictError, NotFoundError). */
  async #request(method, url, body, { persist = false, signal = null } = {}) {
    const response = await (persist ? this.#persist(() => this.#fetch(method, url, body, signal), signal) : this.#fetch(method, url, body, signal));
    if (response.ok) return response.status === 204 ? null : response.json();
    if (response.status === 404) throw new NotFoundError(url);
    const error = await errorFromResponse(response);
    if (response.status === 409 && error.code === "STALE") throw new ConflictError(await this.#revisionOf(url));
    throw error;
  }

  async #fetch(method, url, body, signal) {
    const init = { method, headers: { Accept: "application/json" }, signal };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      return await fetch(url, init);
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new ChatError("Could not reach the server.", { kind: "network" });
    }
  }

  /** A conflict's current revision (the 409 names it too; a read is simpler than parsing it). */
  async #revisionOf(url) {
    const conversation = await this.#request("GET", url.replace(/\/(restore|messages.*)$/, "")).catch(() => null);
    return conversation?.revision ?? 0;
  }

  /**
   * Try `attempt` (a fetch) until the server answers (anything but a gateway error), waiting
   * between tries; listeners hear that writes are waiting while they are.
   */
  async #persist(attempt, signal) {
    const waiting = this.#waitingMark();
    try {
      for (;;) {
        let response = null;
        try {
          response = await attempt();
        } catch (error) {
          if (!(error instanceof ChatError && error.kind === "network")) throw error;
        }
        if (response && !TRANSIENT.has(response.status)) return response;
        waiting.on();
        await this.#pause(signal);
      }
    } finally {
      waiting.off();
    }
  }

  /** One write's share of the "waiting" count: on while it waits to be retried, at most once. */
  #waitingMark() {
    let counted = false;
    return {
      on: () => {
        if (!counted) this.#setWaiting(this.#waiting + 1);
        counted = true;
      },
      off: () => {
        if (counted) this.#setWaiting(this.#waiting - 1);
        counted = false;
      },
    };
  }

  #pause(signal, ms = RETRY_MS) {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake.delete(done);
        signal?.removeEventListener("abort", aborted);
        resolve();
      };
      const aborted = () => {
        done();
        reject(signal.reason ?? new DOMException("Aborted", "AbortError"));
      };
      const timer = setTimeout(done, ms);
      this.#wake.add(done);
      if (signal?.aborted) aborted();
      else signal?.addEventListener("abort", aborted);
    });
  }

  #retryNow() {
    for (const wake of [...this.#wake]) wake();
  }

  #setWaiting(count) {
    this.#waiting = count;
    for (const listener of this.#pendingListeners) listener(count);
  }

  /** `callback(count)` whenever the number of writes waiting to reach the server changes. */
  onPending(callback) {
    this.#pendingListeners.add(callback);
    return () => this.#pendingListeners.delete(callback);
  }

  // ---- reading ---------------------------------------------------------------------------------

  async list({ after = null, limit = PAGE } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (after) query.set("before", after);
    const page = await this.#request("GET", `/api/conversations?${query}`);
    // The change feed starts from the newest conversation of the first list (or from the start).
    if (!after) this.#since ??= page.items[0]?.updated_at ?? EPOCH;
    return { items: page.items.map(summaryFrom), next: page.next };
  }

  /** The server's best hits (one page: `next` is always null), a conversation once each. */
  async search(text, { after = null, limit = PAGE } = {}) {
    if (!text.trim()) return this.list({ after, limit });
    if (after) return { items: [], next: null };
    const { items } = await this.#request("GET", `/api/search?${new URLSearchParams({ q: text })}`);
    const seen = new Map();
    for (const hit of items) {
      // The first hit of a conversation is its newest message that has the words (or its title).
      if (!seen.has(hit.conversation_id)) {
        seen.set(hit.conversation_id, { id: hit.conversation_id, title: hit.title, updatedAt: time(hit.updated_at), messageId: hit.message_id ?? undefined });
      }
    }
    return { items: [...seen.values()].slice(0, limit), next: null };
  }

  async get(id) {
    let raw;
    try {
      raw = await this.#request("GET", `/api/conversations/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error instanceof NotFoundError) return null;
      throw error;
    }
    return conversationFrom(raw, this.#waits());
  }

  problems() {
    return this.#local.problems();
  }

  // ---- writing ---------------------------------------------------------------------------------

  /**
   * A new conversation on the server, with `conversation`'s title and settings (its messages are
   * sent by turn()). Answers {id, revision, updatedAt}: the id is the server's.
   */
  async create(conversation) {
    const made = await this.#request(
      "POST",
      "/api/conversations",
      { title: conversation.title.trim().slice(0, 300) || "New chat", settings: settingsTo(conversation.settings), client_id: conversation.id },
      { persist: true },
    );
    this.#emit({ id: made.id, origin: "here", summary: summaryFrom(made) });
    return { id: made.id, revision: made.revision, updatedAt: time(made.updated_at) };
  }

  async update(id, fields, { revision }) {
    const body = { revision };
    if (typeof fields.title === "string" && fields.title.trim()) body.title = fields.title.trim().slice(0, 300);
    if (fields.settings) body.settings = settingsTo(fields.settings);
    if (fields.leafId) body.leaf_id = fields.leafId;
    const changed = await this.#request("PATCH", `/api/conversations/${encodeURIComponent(id)}`, body, { persist: true });
    this.#emit({ id, origin: "here", summary: summaryFrom(changed) });
    return { revision: changed.revision, updatedAt: time(changed.updated_at) };
  }

  /** The messages are the server's: only the title, settings and leaf are the caller's to set. */
  replace(conversation, { revision }) {
    return this.update(conversation.id, conversation, { revision });
  }

  appendMessage() {
    return Promise.reject(new TypeError("On the server, messages are sent with turn()"));
  }

  updateMessage() {
    return Promise.reject(new TypeError("On the server, replies are written by the server"));
  }

  /** Gone from the page at once; the server hears of it as soon as it can be reached. */
  async remove(id) {
    this.#emit({ id, origin: "here", removed: true });
    this.#request("DELETE", `/api/conversations/${encodeURIComponent(id)}`, undefined, { persist: true }).catch(() => this.#emit({ all: true, origin: "here" }));
  }

  /** Undo a removal (within the minutes before the server purges it). */
  async restore(conversation) {
    await this.#request("POST", `/api/conversations/${encodeURIComponent(conversation.id)}/restore`, {}, { persist: true });
    this.#emit({ all: true, origin: "here" });
  }

  async importAll(conversations) {
    const result = await this.#request("POST", "/api/import", { format: "quartchat", version: 1, conversations }, { persist: true });
    this.#emit({ all: true, origin: "here" });
    return { created: result.imported, skipped: result.skipped, full: false };
  }

  // ---- turns: a reply is a run on the server ---------------------------------------------------

  /**
   * One turn, saved and answered by the server (store.js describes `turn`, the hooks and the run
   * answered). Until the server has accepted it, a turn that cannot reach the server is retried
   * (with the same client id, so it is made once); a refusal then (say TURN_CONFLICT: the
   * conversation has a reply still running) rejects `ended`.
   */
  turn(conversation, turn, hooks) {
    const run = this.#newRun(conversation, null, hooks);
    run.ended = this.#ask(run, turn).finally(() => this.#over(run));
    return run;
  }

  /**
   * Read a reply that is still running (asked for in another tab or device, or by this tab before
   * a reload), live, to its end: from where this tab had it, or from its start.
   */
  follow(conversation, reply, hooks) {
    const run = this.#newRun(conversation, reply, hooks);
    const kept = this.#kept(reply.id);
    if (kept) {
      reply.content = kept.text;
      run.lastId = kept.id;
    } else {
      run.fresh = true; // the text loaded is a checkpoint: the events from the start replace it
    }
    run.ended = this.#read(run).finally(() => this.#over(run));
    return run;
  }

  #newRun(conversation, reply, hooks) {
    const controller = new AbortController();
    const run = {
      conversation,
      reply,
      hooks,
      controller,
      lastId: null, // the id of the last event heard: where to resume
      fresh: false, // reading from the start over a checkpoint's text ...
      replay: "", // ... what the events have said so far, shown once it reaches the checkpoint
      heard: performance.now(),
      attempt: null, // the current connection's controller
      stop: () => this.#stop(run),
      detach: () => controller.abort(),
    };
    this.#runs.add(run);
    return run;
  }

  /** A controller for one connection of `run`: aborted with the run, or alone to reconnect. */
  #attempt(run) {
    const attempt = new AbortController();
    const signal = run.controller.signal;
    if (signal.aborted) attempt.abort();
    else signal.addEventListener("abort", () => attempt.abort(), { once: true });
    run.attempt = attempt;
    return attempt;
  }

  async #ask(run, turn) {
    const { conversation, hooks } = run;
    const signal = run.controller.signal;
    if (conversation.revision === 0) {
      const made = await this.create(conversation);
      Object.assign(conversation, { id: made.id, revision: made.revision, updatedAt: made.updatedAt });
    }
    // A question answers the version shown; an edit or a new reply sits beside its message.
    const beside = conversation.messages.find((m) => m.id === turn.messageId);
    const parentId = turn.kind === "send" ? conversation.leafId : (beside?.parentId ?? null);
    const base = `/api/conversations/${encodeURIComponent(conversation.id)}/messages`;
    const clientId = newId();
    let url = base;
    let body = { content: turn.content, client_id: clientId };
    if (turn.kind === "send" && parentId) body.parent_id = parentId;
    if (turn.kind === "edit") url = `${base}/${encodeURIComponent(turn.messageId)}/edit`;
    if (turn.kind === "regenerate") {
      url = `${base}/${encodeURIComponent(turn.messageId)}/regenerate`;
      body = { client_id: clientId };
    }
    const accepted = (response) => {
      const messageId = response.headers.get("Quartchat-Message-Id");
      const replyId = response.headers.get("Quartchat-Reply-Id");
      let questionId = parentId;
      if (turn.kind !== "regenerate") {
        questionId = messageId;
        adopt(conversation, { id: messageId, parentId, role: "user", content: turn.content, createdAt: Date.now() });
      }
      const reply = { id: replyId, parentId: questionId, role: "assistant", content: "", status: "streaming", createdAt: Date.now(), model: turn.model ?? null };
      run.reply = adopt(conversation, reply);
      Object.assign(run.reply, { status: "streaming", content: "" }); // this response brings it from its start
      conversation.leafId = replyId;
      hooks.onAdded();
    };
    const waiting = this.#waitingMark();
    try {
      for (;;) {
        const attempt = this.#attempt(run);
        try {
          const done = await streamReply(url, body, {
            signal: attempt.signal,
            onResponse: (response) => {
              waiting.off();
              accepted(response);
            },
            onDelta: (delta) => this.#delta(run, delta),
            onId: (id) => this.#heard(run, id),
          });
          replyDone(run.reply, done);
          return;
        } catch (error) {
          if (run.reply) return await this.#broke(run, error, () => this.#read(run));
          if (signal.aborted) throw error;
          // Before it was accepted, a turn that did not reach the service (no connection, or a
          // gateway's error page rather than the service's own error) is tried again.
          if (!unreached(error)) throw error;
          waiting.on();
          await this.#pause(signal);
        } finally {
          run.attempt = null;
        }
      }
    } finally {
      waiting.off();
    }
  }

  /** Read the run's events after the last one heard, again after each dropped connection. */
  async #read(run) {
    const { conversation, reply } = run;
    const signal = run.controller.signal;
    const url = `/api/conversations/${encodeURIComponent(conversation.id)}/messages/${encodeURIComponent(reply.id)}/events`;
    let wait = BACKOFF_MS;
    for (;;) {
      if (signal.aborted) return;
      const attempt = this.#attempt(run);
      try {
        const done = await followReply(url, {
          after: run.lastId,
          signal: attempt.signal,
          onDelta: (delta) => this.#delta(run, delta),
          onId: (id) => {
            this.#heard(run, id);
            wait = BACKOFF_MS;
          },
        });
        this.#replayed(run);
        if (done) replyDone(reply, done);
        return; // (null: it had ended before; the reload after the run takes its final state in)
      } catch (error) {
        if (await this.#broke(run, error, null)) return;
        // A dropped connection: again after a while (sooner once back online or in view).
        try {
          await this.#pause(signal, wait / 2 + (Math.random() * wait) / 2);
        } catch {
          return;
        }
        wait = Math.min(wait * 2, BACKOFF_MAX_MS);
      } finally {
        run.attempt = null;
      }
    }
  }

  /**
   * A run's connection ended without its end. Detached, or a refusal: nothing more to read
   * (answers true). Dropped (no connection, a gateway error, or cut for being silent too long):
   * said to be reconnecting, then `resume()` when given, else answers false (the caller retries).
   */
  async #broke(run, error, resume) {
    const { reply } = run;
    if (run.controller.signal.aborted) return true;
    const dropped = error.name === "AbortError" || unreached(error);
    if (!dropped) {
      this.#replayed(run);
      if (error.status === 404) return true; // gone: the reload after the run says so
      if (error.retryAt) this.#keepWait(reply.id, error);
      replyFailed(reply, error);
      return true;
    }
    if (!reply.reconnecting) {
      reply.reconnecting = true;
      run.hooks.onConnection?.();
    }
    if (resume) await resume();
    return false;
  }

  #delta(run, delta) {
    const { reply } = run;
    if (run.fresh) {
      // From the start over a checkpoint: shown once it has caught up with what is on screen.
      run.replay += delta;
      if (run.replay.length < reply.content.length) return;
      run.fresh = false;
      reply.content = run.replay;
      run.replay = "";
    } else {
      reply.content += delta;
    }
    run.hooks.onDelta();
  }

  /** The events ended: a replay from the start that never caught up is the text all the same. */
  #replayed(run) {
    if (!run.fresh || run.lastId === null) return;
    run.fresh = false;
    run.reply.content = run.replay;
    run.hooks.onDelta();
  }

  #heard(run, id) {
    run.lastId = id;
    run.heard = performance.now();
    if (run.reply.reconnecting) {
      delete run.reply.reconnecting;
      run.hooks.onConnection?.();
    }
  }

  /** Ask the server to stop the run (wherever it runs); every reader then hears REPLY_STOPPED. */
  async #stop(run) {
    if (!run.reply) return run.controller.abort(); // not accepted yet: nothing runs on the server
    const url = `/api/conversations/${encodeURIComponent(run.conversation.id)}/messages/${encodeURIComponent(run.reply.id)}/stop`;
    await this.#request("POST", url, {}, { persist: true, signal: run.controller.signal }).catch(() => {});
  }

  /** The page goes away or out of view: each reply's last id and its text, for the next page of this tab. */
  #keepRuns() {
    for (const run of this.#runs) {
      if (!run.reply || run.lastId === null) continue;
      const text = run.fresh ? run.replay : run.reply.content;
      try {
        sessionStorage.setItem(KEPT + run.reply.id, JSON.stringify({ id: run.lastId, text }));
      } catch {
        // Full or blocked: the next page reads the reply from its start.
      }
    }
  }

  /**
   * A run no longer read here. What was kept of it when the page went out of view is dropped:
   * nothing reads it again, and a tab open for days would otherwise fill its sessionStorage.
   */
  #over(run) {
    this.#runs.delete(run);
    if (!run.reply) return;
    try {
      sessionStorage.removeItem(KEPT + run.reply.id);
    } catch {
      // No sessionStorage: nothing was kept.
    }
  }

  /** What this tab kept of a reply before a reload ({id, text}), taken (read once). */
  #kept(replyId) {
    try {
      const kept = JSON.parse(sessionStorage.getItem(KEPT + replyId) || "null");
      sessionStorage.removeItem(KEPT + replyId);
      if (typeof kept?.id === "string" && typeof kept.text === "string") return kept;
    } catch {
      // Unreadable, or no sessionStorage: from the start.
    }
    return null;
  }

  // ---- replies being written elsewhere ---------------------------------------------------------

  /** The server writes them all; one the page does not follow (it follows one a conversation) is being written. */
  async beingWritten(messageIds) {
    return new Set(messageIds);
  }

  /** Never settles: the change feed brings the conversation again once that reply has ended. */
  whenWritten() {
    return new Promise(() => {});
  }

  // ---- this browser only ---------------------------------------------------------------------

  draft(id) {
    return this.#local.draft(id);
  }

  setDraft(id, text) {
    return this.#local.setDraft(id, text);
  }

  // ---- changes ---------------------------------------------------------------------------------

  subscribe(callback) {
    this.#listeners.add(callback);
    if (!this.#polling) {
      this.#polling = true;
      const soon = () => document.visibilityState === "visible" && this.poll();
      window.addEventListener("focus", soon);
      document.addEventListener("visibilitychange", soon);
      window.addEventListener("online", soon);
      this.#pollTimer = setTimeout(() => this.poll(), POLL_MS);
    }
    return () => this.#listeners.delete(callback);
  }

  /** Ask the change feed what changed since the last time (one poll at a time). */
  poll() {
    this.#inPoll ??= this.#pollOnce().finally(() => {
      this.#inPoll = null;
      clearTimeout(this.#pollTimer);
      this.#pollTimer = setTimeout(() => this.poll(), POLL_MS);
    });
    return this.#inPoll;
  }

  async #pollOnce() {
    try {
      if (this.#since === null) {
        const first = await this.#request("GET", "/api/conversations?limit=1");
        this.#since = first.items[0]?.updated_at ?? EPOCH;
        return;
      }
      const feed = await this.#request("GET", `/api/conversations/changes?${new URLSearchParams({ since: this.#since })}`);
      this.#since = feed.now;
      for (const item of feed.items) this.#emit({ id: item.id, origin: "elsewhere", summary: summaryFrom(item), content: true });
      for (const id of feed.deleted) this.#emit({ id, origin: "elsewhere", removed: true });
    } catch {
      // Offline, or logged out: the next poll tries again; writes say so themselves.
    }
  }

  #emit(change) {
    queueMicrotask(() => {
      for (const listener of this.#listeners) listener(change);
    });
  }
}

/** Put `message` into the conversation, or answer the copy already there (a poll was quicker). */
function adopt(conversation, message) {
  const existing = conversation.messages.find((m) => m.id === message.id);
  if (existing) return existing;
  conversation.messages.push(message);
  return message;
}

/**
 * The first time a user's page opens with the server store, the conversations this browser kept
 * for them (from before accounts, or before conversations moved to the server) are sent to the
 * server's import, which makes each once however often or from however many tabs it is sent.
 * They are then marked imported here (`<prefix>imported`), and stay in this browser's storage
 * untouched. Answers {imported, skipped}, or null when there was nothing to import.
 */
export async function importFromBrowser(local, remote, storage, prefix) {
  const key = `${prefix}imported`;
  let done;
  try {
    done = new Set(JSON.parse(storage.getItem(key) || "[]"));
  } catch {
    done = new Set();
  }
  const conversations = [];
  for (let after = null, page; (page = await local.list({ after, limit: 200 })); after = page.next) {
    for (const summary of page.items) {
      if (done.has(summary.id)) continue;
      const conversation = await local.get(summary.id);
      if (conversation?.messages.length) conversations.push(conversation);
    }
    if (!page.next) break;
  }
  if (!conversations.length) return null;
  const result = await remote.importAll(conversations);
  for (const conversation of conversations) done.add(conversation.id);
  try {
    storage.setItem(key, JSON.stringify([...done]));
  } catch {
    // Full: the next start sends them again, and the server skips them.
  }
  return { imported: result.created, skipped: result.skipped };
}

"""`/api/conversations` and `/api/search`: conversations kept on the server, per user.

Every route acts for the logged-in user only: another user's conversation is a 404, never a 403
and never its data. Sending a message streams the reply as `/api/chat/stream` does (`chunk`,
`done`, `error`); the ids of the messages the turn made come in the response's headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, RootModel
from quart import Blueprint, Response, current_app, g, request
from quart_schema import document_querystring, document_request, document_response

from ..auth import limits
from ..auth.principal import Principal, current_principal
from ..conversations import rows, store, transfer, turns
from ..conversations.search import search as search_messages
from ..db import Database
from ..db.tables import now
from ..db.tx import run_in
from ..errors import APIError
from ..openapi import Described, EventStream, Ok, document_errors, link
from ..runs.control import Runs
from ..runs.log import Resume, resume_point
from ..schemas import MAX_TOKENS, ChatUsage
from ..streaming.watch import LiveStreams
from . import admission
from .common import event_stream
from .validation import INTEGRAL, MAX_ROW_ID, Empty, instant, path_converters, takes

blueprint = Blueprint("conversations", __name__, url_prefix="/api")
blueprint.record_once(path_converters)

CONVERSATION = "/conversations/<row_uuid:conversation_id>"
STREAM_ERRORS = (400, 401, 403, 404, 409, 413, 415, 429, 500, 502, 503, 504)


def db() -> Database:
    database: Database = current_app.extensions["db"]
    return database


def owner() -> int:
    principal: Principal | None = current_principal()
    assert principal is not None, "the gate lets no request without a principal reach this view"
    return principal.user_id


def json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, content_type="application/json")


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Settings(Strict):
    """A conversation's model, system prompt and sampling (empty: the service's defaults)."""

    model: str | None = Field(None, max_length=256)
    system: str = Field("", max_length=100_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: Annotated[int, Field(gt=0, le=MAX_TOKENS), INTEGRAL] | None = None


# -- conversations -------------------------------------------------------------------------------


def cursor_of(summary: rows.Summary) -> str:
    return f"{summary.updated_at.isoformat()}|{summary.id}"


def parse_cursor(value: str | None) -> tuple[datetime, str] | None:
    if not value:
        return None
    at, _, last_id = value.replace(" ", "+").partition("|")
    try:
        return instant(at), last_id
    except ValueError:
        raise APIError(
            400, "INVALID_REQUEST", "That `before` cursor is not one this API gave."
        ) from None


class Summary(BaseModel):
    """A conversation as the sidebar lists it."""

    id: str
    title: str
    updated_at: datetime
    pinned: bool
    archived: bool


class SummaryPage(BaseModel):
    """A page of my conversations, most recently updated first."""

    items: list[Summary]
    next: str | None = Field(description="Pass it back as `before` for the next page")


@blueprint.get("/conversations")
@document_response(SummaryPage)
@document_errors(400, 401, 403)
async def list_conversations() -> Response:
    """My conversations, most recently updated first.

    A page at a time (`?limit=`, 1 to 200, 50 by default): pass the `next` cursor back as `before`
    for the next. Only ids, titles and times: the list stays fast at any number of conversations.
    """
    limit = min(max(request.args.get("limit", 50, type=int) or 50, 1), 200)
    before = parse_cursor(request.args.get("before"))
    async with db().read() as connection:
        page = await store.page(connection, owner(), before=before, limit=limit)
    next_cursor = cursor_of(page[-1]) if len(page) == limit else None
    return json({"items": [s.public() for s in page], "next": next_cursor})


class ChangesQuery(BaseModel):
    since: datetime = Field(description="A time this API gave as `now` (with its offset)")


class Changes(BaseModel):
    """Conversations changed since then, and the ids of those deleted."""

    items: list[Summary]
    deleted: list[str]
    now: datetime = Field(description="Pass it as `since` next time")


@blueprint.get("/conversations/changes")
@document_querystring(ChangesQuery)
@document_response(Changes)
@document_errors(400, 401, 403)
async def changes() -> Response:
    """What changed since `since` (an ISO time this API gave as `now`): for other devices.

    Deleted conversations are listed under `deleted`.
    """
    # A `+` of the time's offset that arrives unencoded has become a space.
    since_text = request.args.get("since", "").replace(" ", "+")
    try:
        since = instant(since_text)
    except ValueError:
        raise APIError(400, "INVALID_REQUEST", "Give `since`, a time this API gave.") from None
    async with db().read() as connection:
        changed = await store.changed_since(connection, owner(), since)
    items = [c.public() for c, deleted, _ in changed if not deleted]
    gone = [c.id for c, deleted, _ in changed if deleted]
    latest = max((at for _, _, at in changed), default=since)
    return json({"items": items, "deleted": gone, "now": latest.isoformat()})


class NewConversation(Strict):
    title: str = Field("New chat", min_length=1, max_length=300)
    settings: Settings = Settings()
    client_id: str | None = Field(None, min_length=1, max_length=64)


THIS_CONVERSATION = {"conversation_id": "$response.body#/id"}


class Conversation(Described):
    """A conversation: its title, settings and flags, and the leaf of the path shown."""

    id: str
    title: str
    settings: Settings
    leaf_id: str | None
    pinned: bool
    archived: bool
    revision: int = Field(description="Goes up by one with every change")
    created_at: datetime
    updated_at: datetime

    response_links = {
        "get": link("get_get_conversation", **THIS_CONVERSATION),
        "change": link("patch_change_conversation", **THIS_CONVERSATION),
        "delete": link("delete_delete_conversation", **THIS_CONVERSATION),
        "send": link("post_send", **THIS_CONVERSATION),
        "export": link("get_export_one", **THIS_CONVERSATION),
    }


@blueprint.post("/conversations")
@takes(NewConversation, "conversation")
@document_response(Conversation, 201)
@document_response(Conversation, 200)
@document_errors(400, 401, 403, 413, 415)
async def create_conversation(body: NewConversation) -> Response:
    """Start a conversation.

    With `client_id` (the browser's own id for it), creating it twice returns the first one.
    """
    await admission.check_model(body.settings.model)
    async with db().write() as connection:
        if body.client_id:
            existing = await store.by_client_id(connection, owner(), body.client_id)
            if existing is not None:
                return json(existing.public())
        made = await store.create(
            connection,
            owner(),
            title=body.title,
            settings=body.settings.model_dump(),
            client_id=body.client_id,
        )
    return json(made.public(), 201)


class MessageError(BaseModel):
    code: str
    message: str


class Message(BaseModel):
    """A message of a conversation's tree."""

    id: str
    parent_id: str | None
    role: Literal["user", "assistant", "system"]
    content: str
    status: Literal["streaming", "complete", "stopped", "interrupted", "error"]
    model: str | None
    finish_reason: str | None
    usage: ChatUsage | None
    error: MessageError | None
    created_at: datetime
    client_id: str | None


class ConversationTree(Conversation):
    """A conversation and every message of its tree."""

    messages: list[Message]


@blueprint.get(CONVERSATION)
@document_response(ConversationTree)
@document_errors(401, 403, 404)
async def get_conversation(conversation_id: str) -> Response:
    """One conversation: its settings, its current leaf, and every message of its tree."""
    async with db().read() as connection:
        conversation = await run_in(connection, store.get, owner(), conversation_id)
        if conversation is None:
            raise turns.not_found()
        tree = await run_in(connection, store.messages_of, owner(), conversation_id)
    return json({**conversation.public(), "messages": [live(m) for m in tree]})


def live(message: rows.Message) -> dict[str, Any]:
    """A message as the API shows it: a `streaming` reply nobody has checkpointed for a while
    belongs to a process that is gone, and is shown as interrupted (the sweep writes it so)."""
    public = message.public()
    if message.status == "streaming" and now() - message.updated_at > turns.STALE_AFTER:
        public["status"] = "interrupted"
    return public


class ConversationChange(Strict):
    title: str | None = Field(None, min_length=1, max_length=300)
    settings: Settings | None = None
    pinned: bool | None = None
    archived: bool | None = None
    leaf_id: str | None = Field(None, min_length=1, max_length=36)
    revision: Annotated[int, Field(ge=1, le=MAX_ROW_ID), INTEGRAL] | None = None


@blueprint.patch(CONVERSATION)
@takes(ConversationChange, "conversation change")
@document_response(Conversation)
@document_errors(400, 401, 403, 404, 409, 413, 415)
async def change_conversation(conversation_id: str, body: ConversationChange) -> Response:
    """Rename, change settings, pin, archive, or switch to another branch (`leaf_id`).

    With `revision`, only if the conversation is still at that revision: 409 `STALE` otherwise,
    with the current revision, so that no tab or device overwrites a newer change.
    """
    values = body.model_dump(exclude_none=True, exclude={"revision"})
    if "settings" in values:
        values["settings"] = body.settings.model_dump() if body.settings else {}
        await admission.check_model(body.settings.model if body.settings else None)
    async with db().write() as connection:
        if (
            "leaf_id" in values
            and await store.message(connection, owner(), conversation_id, values["leaf_id"]) is None
        ):
            raise turns.not_found("There is no such message in this conversation.")
        try:
            changed = await store.change(
                connection, owner(), conversation_id, revision=body.revision, **values
            )
        except store.Stale as stale:
            raise APIError(
                409,
                "STALE",
                f"The conversation changed meanwhile (it is at revision {stale.revision}): reload it.",
                details=[{"revision": stale.revision}],
            ) from None
    if changed is None:
        raise turns.not_found()
    return json(changed.public())


@blueprint.delete(CONVERSATION)
@document_response(Ok)
@document_errors(401, 403, 404)
async def delete_conversation(conversation_id: str) -> Response:
    """Delete a conversation: gone at once; its messages and search entries are purged for good
    a few minutes later (until then, `POST …/restore` undoes it)."""
    async with db().write() as connection:
        if not await store.delete_soon(connection, owner(), conversation_id):
            raise turns.not_found()
    return json({"ok": True})


@blueprint.post(f"{CONVERSATION}/restore")
@takes(Empty)
@document_response(Ok)
@document_errors(400, 401, 403, 404, 413, 415)
async def restore_conversation(conversation_id: str, body: Empty) -> Response:
    """Undo a deletion (within the few minutes before it is purged)."""
    async with db().write() as connection:
        if not await store.undelete(connection, owner(), conversation_id):
            raise turns.not_found()
    return json({"ok": True})


# -- turns -------------------------------------------------------------------------------------


class NewMessage(Strict):
    content: str = Field(min_length=1, max_length=500_000)
    client_id: str = Field(min_length=1, max_length=64)
    parent_id: str | None = Field(None, min_length=1, max_length=36)


class Regenerate(Strict):
    client_id: str = Field(min_length=1, max_length=64)


class Edit(Strict):
    content: str = Field(min_length=1, max_length=500_000)
    client_id: str = Field(min_length=1, max_length=64)


class TurnStream(EventStream):
    """The reply, as server-sent events: `chunk`, then `done` or `error`, as `/api/chat/stream`.

    The server saves the reply as it streams; the headers name the messages the turn made.
    """

    response_headers = {
        "Quartchat-Message-Id": {
            "description": "The id of the question this turn added (none on a regenerate)",
            "schema": {"type": "string"},
        },
        "Quartchat-Reply-Id": {
            "description": "The id of the reply",
            "required": True,
            "schema": {"type": "string"},
        },
    }
    response_links = {
        "regenerate": link(
            "post_regenerate",
            conversation_id="$request.path.conversation_id",
            message_id="$response.header.Quartchat-Reply-Id",
        ),
        "edit": link(
            "post_edit",
            conversation_id="$request.path.conversation_id",
            message_id="$response.header.Quartchat-Message-Id",
        ),
        "conversation": link(
            "get_get_conversation", conversation_id="$request.path.conversation_id"
        ),
    }


async def run_turn(begin: Callable[[], Awaitable[turns.Turn]]) -> Response:
    """The turn `begin` starts, streamed: admitted first (limits, the user's concurrent
    requests), so that a refused turn writes nothing."""
    admitted = await admission.admit("page", choose=False)
    try:
        return await stream_turn(await begin(), admitted)
    except BaseException:
        admitted.withdraw()  # its slot, and what the budgets reserved (once: a record settled it)
        raise


async def stream_turn(turn: turns.Turn, admitted: admission.Admitted) -> Response:
    """The reply of `turn` as server-sent events: its run's, which goes on (and is saved) if this
    response goes away."""
    if turn.replayed:  # a retried send: its reply, running or not
        admitted.withdraw()
        body = runs().read(owner(), turn.reply, Resume(0, False))
        return event_stream(body, turn_headers(turn))
    streams: LiveStreams = current_app.extensions["streams"]
    streams.refuse_if_draining()
    writer = turns.ReplyWriter(
        db(), owner(), turn.reply.id, g.access, checkpoint_seconds=runs().checkpoint_seconds
    )
    meter = admitted.meter(writer)
    try:
        # The conversation's model is known once the turn has begun: checked now, before the
        # upstream sees it (a refusal is recorded on the reply, as an upstream's is).
        route = await admitted.choose(turn.chat.model)
        admitted.request.prompt_chars = sum(len(m.content) for m in turn.chat.messages)
        await runs().start(
            turn.reply.id,
            partial(route.client.open_stream, turn.chat, route.model),
            meter,
            g.request_id,
            holder=admission.holder(),
            slot=admitted.slot,
        )
    except APIError as error:
        # The turn is saved, its reply as failed: the error names both messages, so the page
        # shows the error in the reply instead of offering to send the question again.
        error.headers.update(turn_headers(turn))
        raise
    g.access.streaming = True  # the run's end writes the access line
    return event_stream(runs().log.follow(turn.reply.id, 0), turn_headers(turn))


def turn_headers(turn: turns.Turn) -> dict[str, str]:
    """The headers that name the messages a turn made (no question on a regenerate)."""
    headers = {"Quartchat-Reply-Id": turn.reply.id}
    if turn.user is not None:
        headers["Quartchat-Message-Id"] = turn.user.id
    return headers


@blueprint.post(f"{CONVERSATION}/messages")
@takes(NewMessage, "message")
@document_response(TurnStream)
@document_errors(*STREAM_ERRORS)
async def send(conversation_id: str, body: NewMessage) -> Response:
    """Send a message; the reply streams back and is saved by the server as it comes.

    `client_id` is the sender's id for the message: sending it again (a retry) starts nothing
    new. `parent_id` defaults to the conversation's current leaf.
    """
    return await run_turn(
        partial(
            turns.send,
            db(),
            owner(),
            conversation_id,
            content=body.content,
            client_id=body.client_id,
            parent_id=body.parent_id,
        )
    )


@blueprint.post(f"{CONVERSATION}/messages/<row_uuid:message_id>/regenerate")
@takes(Regenerate, "regenerate request")
@document_response(TurnStream)
@document_errors(*STREAM_ERRORS)
async def regenerate(conversation_id: str, message_id: str, body: Regenerate) -> Response:
    """Answer the question of reply `message_id` again: a new reply beside it."""
    return await run_turn(
        partial(turns.regenerate, db(), owner(), conversation_id, message_id, body.client_id)
    )


@blueprint.post(f"{CONVERSATION}/messages/<row_uuid:message_id>/edit")
@takes(Edit, "edit")
@document_response(TurnStream)
@document_errors(*STREAM_ERRORS)
async def edit(conversation_id: str, message_id: str, body: Edit) -> Response:
    """Ask question `message_id` differently: a new question beside it, and its reply."""
    return await run_turn(
        partial(
            turns.edit,
            db(),
            owner(),
            conversation_id,
            message_id,
            content=body.content,
            client_id=body.client_id,
        )
    )


class ReplyEvents(EventStream):
    """The reply's events after `Last-Event-ID` (or `?after=`), then the live ones, to its end.

    Ids say where in the reply each event ends; resuming after any id gives exactly the rest.
    A reply that has ended is answered at once from what was saved.
    """


class EventsQuery(BaseModel):
    after: str | None = Field(
        None,
        pattern=r"^[0-9]{1,12}(\.end)?$",
        description="An event id: the events after it (as the `Last-Event-ID` header)",
    )


@blueprint.get(f"{CONVERSATION}/messages/<row_uuid:message_id>/events")
@document_querystring(EventsQuery)
@document_response(ReplyEvents)
@document_errors(400, 401, 403, 404)
async def reply_events(conversation_id: str, message_id: str) -> Response:
    """Follow reply `message_id`: from where the reader left (`Last-Event-ID`), live to its end,
    from any tab, device or process."""
    # An empty Last-Event-ID is a reader that has had no event yet.
    after = resume_point(request.headers.get("Last-Event-ID") or request.args.get("after"))
    reply = await owned_reply(conversation_id, message_id)
    return event_stream(runs().read(owner(), reply, after))


class Stopped(BaseModel):
    ok: bool
    status: Literal["streaming", "complete", "stopped", "interrupted", "error"] = Field(
        description="The reply's status after the stop"
    )


@blueprint.post(f"{CONVERSATION}/messages/<row_uuid:message_id>/stop")
@takes(Empty)
@document_response(Stopped)
@document_errors(400, 401, 403, 404, 413, 415)
async def stop(conversation_id: str, message_id: str, body: Empty) -> Response:
    """Stop reply `message_id` wherever it runs: its upstream is closed within a second, its
    text so far saved as `stopped`, and every reader gets the end (`REPLY_STOPPED`). A reply
    that has ended stays as it is."""
    reply = await owned_reply(conversation_id, message_id)
    if reply.status == "streaming":
        await runs().stop(owner(), reply.id)
        reply = await owned_reply(conversation_id, message_id)
    return json({"ok": True, "status": live(reply)["status"]})


async def owned_reply(conversation_id: str, message_id: str) -> rows.Message:
    """The owner's reply `message_id` of conversation `conversation_id`, or 404."""
    async with db().read() as connection:
        reply = await store.message(connection, owner(), conversation_id, message_id)
    if reply is None or reply.role != "assistant":
        raise turns.not_found("There is no such reply in this conversation.")
    return reply


def runs() -> Runs:
    running: Runs = current_app.extensions["runs"]
    return running


# -- search, export, import --------------------------------------------------------------------


class SearchQuery(BaseModel):
    q: str = Field("", description="Words to find (the last one as a prefix, from 3 characters on)")


class SearchHit(BaseModel):
    """A message (or, with no `message_id`, a title) that has every word."""

    conversation_id: str
    title: str
    message_id: str | None
    snippet: str
    updated_at: datetime


class SearchResults(BaseModel):
    """The hits: the newest messages first, then titles."""

    items: list[SearchHit]


@blueprint.get("/search")
@document_querystring(SearchQuery)
@document_response(SearchResults)
@document_errors(401, 403)
async def search() -> Response:
    """My messages and titles containing every word of `q` (the last word as a prefix).

    Any text is safe to search: quotes, operators and brackets are not query syntax here.
    """
    query = request.args.get("q", "")
    async with db().read() as connection:
        hits = await search_messages(connection, owner(), query)
    return json({"items": [h.public() for h in hits]})


class ExportQuery(BaseModel):
    format: Literal["json", "markdown"] = "json"


class ExportedMessage(BaseModel):
    id: str
    parent_id: str | None = Field(alias="parentId")
    role: Literal["user", "assistant", "system"]
    content: str
    status: Literal["streaming", "complete", "stopped", "interrupted", "error"]
    created_at: int = Field(alias="createdAt", description="Milliseconds since 1970")
    model: str | None
    usage: ChatUsage | None
    finish_reason: str | None = Field(alias="finishReason")


class ExportedConversation(BaseModel):
    id: str
    title: str
    created_at: int = Field(alias="createdAt", description="Milliseconds since 1970")
    updated_at: int = Field(alias="updatedAt", description="Milliseconds since 1970")
    settings: Settings
    leaf_id: str | None = Field(alias="leafId")
    messages: list[ExportedMessage]


class ExportFile(Described):
    """Our JSON (what the page exports too), or with `?format=markdown` each conversation's
    current path as Markdown; a download either way."""

    format: Literal["quartchat"]
    version: Literal[1]
    exported_at: datetime = Field(alias="exportedAt")
    conversations: list[ExportedConversation]

    response_headers = {
        "Content-Disposition": {
            "description": '`attachment; filename="…"`',
            "required": True,
            "schema": {"type": "string"},
        }
    }
    other_media = {"text/markdown": {"schema": {"type": "string"}}}


@blueprint.get(f"{CONVERSATION}/export")
@document_querystring(ExportQuery)
@document_response(ExportFile)
@document_errors(400, 401, 403, 404)
async def export_one(conversation_id: str) -> Response:
    """One conversation as our JSON (`?format=json`, the default) or as Markdown."""
    kind = request.args.get("format", "json")
    async with db().read() as connection:
        conversation = await run_in(connection, store.get, owner(), conversation_id)
        if conversation is None:
            raise turns.not_found()
        tree = await run_in(connection, store.messages_of, owner(), conversation_id)
    return exported([(conversation, tree)], kind, conversation.title)


@blueprint.get("/export")
@document_querystring(ExportQuery)
@document_response(ExportFile)
@document_errors(400, 401, 403)
async def export_all() -> Response:
    """All my conversations, as our JSON (`?format=json`) or Markdown."""
    kind = request.args.get("format", "json")
    pairs = []
    async with db().read() as connection:
        before = None
        while True:
            page = await store.page(connection, owner(), before=before, limit=200)
            for summary in page:
                conversation = await run_in(connection, store.get, owner(), summary.id)
                if conversation is not None:
                    pairs.append(
                        (
                            conversation,
                            await run_in(connection, store.messages_of, owner(), summary.id),
                        )
                    )
            if len(page) < 200:
                break
            before = (page[-1].updated_at, page[-1].id)
    return exported(pairs, kind, "quartchat")


def exported(
    pairs: list[tuple[rows.Conversation, list[rows.Message]]], kind: str, name: str
) -> Response:
    if kind == "markdown":
        response = Response(
            transfer.to_markdown(pairs), content_type="text/markdown; charset=utf-8"
        )
        extension = "md"
    elif kind == "json":
        response = json(transfer.to_json(pairs))
        extension = "json"
    else:
        raise APIError(400, "INVALID_REQUEST", "`format` is json or markdown.")
    filename = transfer.file_name(name, extension)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class ChatGPTConversation(BaseModel):
    """One conversation of ChatGPT's `conversations.json`: its messages are the nodes of the
    `mapping` tree (`{node id: {parent, message: {author: {role}, content: {parts}}}}`)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    conversation_id: str | None = None
    title: str | None = None
    create_time: float | None = None
    current_node: str | None = None
    mapping: dict[str, Any]


class ImportFile(RootModel[ExportFile | list[ChatGPTConversation] | Any]):
    """Our JSON export, or ChatGPT's `conversations.json` (a list).

    Read leniently: what cannot be read is skipped and listed in `problems`, and any other JSON
    imports nothing (and `problems` says why).
    """


class ImportResult(BaseModel):
    """What an import did."""

    imported: int
    skipped: int
    problems: list[str]


IMPORT_QUOTA_WINDOW = timedelta(days=1)


@blueprint.post("/import")
@document_request(ImportFile)
@document_response(ImportResult)
@document_errors(400, 401, 403, 413, 415, 429, 503)
async def import_conversations() -> Response:
    """Import our JSON export, or ChatGPT's `conversations.json` (up to IMPORT_MAX_BYTES, 50 MB).

    Conversations that were imported before (by their id), or are mine already (a re-import of
    my own export), are skipped: importing twice, or from two tabs at once, imports once. Their
    dates are kept, so they take their place in the list by them. A user may import IMPORT_BYTES_PER_DAY a day (429
    `IMPORT_QUOTA_EXCEEDED` past it, with `Retry-After`).
    """
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    await count_import(len(raw))
    try:
        result = await transfer.import_body(db(), owner(), raw)
    except transfer.NotJSON:
        raise APIError(400, "INVALID_REQUEST", "The file is not JSON.") from None
    return json(result)


async def count_import(size: int) -> None:
    """Count `size` bytes against the user's daily import quota before reading any of them; a
    refused import is not counted (its bytes are given back)."""
    limit = current_app.config["QUARTCHAT"].import_bytes_per_day
    key = f"import-bytes:{owner()}"
    counter: limits.Counter = current_app.extensions["counter"]
    wait = await counter.attempt((key,), limit, IMPORT_QUOTA_WINDOW, size)
    if wait is not None:
        await counter.forgive(refunded=(key,), amount=size)
        raise APIError(
            429,
            "IMPORT_QUOTA_EXCEEDED",
            f"Imports are limited to {limit} bytes a day; this one would go over. "
            "Try again later, or import a smaller file.",
            headers={"Retry-After": str(wait)},
        )

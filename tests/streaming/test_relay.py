"""Every streaming behaviour on the path production runs: the app in-process, the aiohttp
transport, and the fake upstream on a real socket (no respx, no test-only read path)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import orjson
import pytest
from quart.typing import TestClientProtocol as Client

from quartchat.accesslog import AccessRecord
from quartchat.streaming.completion import Completion

from ..conftest import (
    CHAT,
    SECRET,
    LiveClient,
    assert_error,
    error_event,
    parse_events,
    texts,
)
from ..fake_upstream import FakeUpstream, Reply, completion_chunks, sse_chunk


def chunk(text: str) -> bytes:
    return sse_chunk({"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}]})


FINISH = sse_chunk({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
DONE = b"data: [DONE]\n\n"


async def stream(client: Client, **headers: str) -> list[tuple[str, Any]]:
    response = await client.post("/api/chat/stream", json=CHAT, headers=headers)
    assert response.status_code == 200, await response.get_data()
    return parse_events(await response.get_data())


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "quartchat.access"]


async def test_deltas_arrive_in_order_then_done_with_the_envelope_and_usage(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["Hel", "lo", " you"]), delay=0.01))
    response = await live_client.post("/api/chat/stream", json=CHAT)
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in response.headers
    events = parse_events(await response.get_data())
    assert [e for e in events if e[0] == "chunk"] == [
        ("chunk", {"delta": "Hel"}),
        ("chunk", {"delta": "lo"}),
        ("chunk", {"delta": " you"}),
    ]
    assert events[-1] == (
        "done",
        {
            "id": "chatcmpl-fake",
            "model": "fake-large",
            "created": 1700000000,
            "message": {"role": "assistant", "content": "Hello you"},
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        },
    )


async def test_the_stream_asks_the_upstream_for_usage(
    live_client: Client, fake: FakeUpstream
) -> None:
    await stream(live_client)
    sent = fake.chat_requests()[-1].json
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_a_stream_that_names_no_model_asks_the_upstream_for_the_configured_one(
    live_client: Client, fake: FakeUpstream
) -> None:
    await stream(live_client)
    assert fake.chat_requests()[-1].json["model"] == "gpt-4o-mini"


async def test_the_done_event_names_the_model_asked_for_when_the_upstream_names_none(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=[chunk("a"), FINISH, DONE]))
    response = await live_client.post("/api/chat/stream", json={**CHAT, "model": "asked-model"})
    events = parse_events(await response.get_data())
    assert events[-1][0] == "done"
    assert events[-1][1]["model"] == "asked-model"


async def test_the_upstream_is_asked_for_an_uncompressed_body(
    live_client: Client, fake: FakeUpstream
) -> None:
    # The relay parses the bytes as they arrive: a gzipped body would be garbage to it.
    await stream(live_client)
    assert fake.chat_requests()[-1].headers["accept-encoding"] == "identity"


MALFORMED = {
    "a null choice": b'data: {"id":"x","choices":[null]}\n\n',
    "a string delta": b'data: {"id":"x","choices":[{"index":0,"delta":"hi"}]}\n\n',
    "string choices": b'data: {"id":"x","choices":"hi"}\n\n',
    "numeric content": b'data: {"id":"x","choices":[{"index":0,"delta":{"content":5}}]}\n\n',
    "a string index": b'data: {"id":"x","choices":[{"index":"0","delta":{"content":"b"}}]}\n\n',
    "a numeric finish reason": b'data: {"choices":[{"index":0,"delta":{},"finish_reason":1}]}\n\n',
    "string usage": b'data: {"choices":[],"usage":"lots"}\n\n',
    "a string token count": b'data: {"choices":[],"usage":{"total_tokens":"9"}}\n\n',
    "not an object": b"data: [1, 2]\n\n",
    "not JSON": b"data: {nope\n\n",
}


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_chunk_ends_the_stream_with_an_upstream_error_event(
    live_client: Client, fake: FakeUpstream, caplog: pytest.LogCaptureFixture, bad: bytes
) -> None:
    caplog.set_level(logging.INFO)
    fake.reply_with(Reply(chunks=[chunk("a"), bad, chunk("never"), FINISH, DONE], delay=0.01))
    events = await stream(live_client, **{"X-Request-ID": "req-bad"})
    assert texts(events) == "a"
    error = error_event(events)
    assert error["code"] == "UPSTREAM_ERROR"
    assert error["request_id"] == "req-bad"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [line["outcome"] for line in access_lines(caplog)] == ["error"]


@pytest.mark.parametrize(
    "error",
    [
        b'data: {"error": {"message": "overloaded"}}\n\n',
        b'error: {"message": "overloaded"}\n\n',  # llama.cpp's non-standard field
        b"data: {broken\n\n",
        b'data: {"choices":[{"index":0,"delta":"bad"}]}\n\n',
    ],
    ids=["in-band error", "error field", "malformed JSON", "malformed chunk"],
)
async def test_text_sent_just_before_an_error_in_the_same_read_reaches_the_client_first(
    live_client: Client, fake: FakeUpstream, error: bytes
) -> None:
    fake.replay_bytes(chunk("partial ") + chunk("text") + error)
    events = await stream(live_client)
    assert events[0] == ("chunk", {"delta": "partial text"})
    assert error_event(events)["code"] == "UPSTREAM_ERROR"


async def test_an_in_band_error_is_relayed_without_the_configured_key_in_any_shape(
    live: LiveClient, fake: FakeUpstream
) -> None:
    azure_key = "0123456789abcdef0123456789abcdef"  # not shaped like sk-…
    echoed = f"Invalid key {azure_key}; header was Authorization: Bearer {azure_key}"
    fake.replay_bytes(chunk("a") + sse_chunk({"error": {"message": echoed}}))
    async with live(openai_api_key=azure_key) as client:
        events = await stream(client)
    error = error_event(events)
    assert azure_key not in json.dumps(events)
    assert "Invalid key [redacted]" in error["message"]


async def test_an_unexpected_exception_mid_stream_ends_it_with_internal_error_logged_once(
    live_client: Client,
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Completion) -> str:
        raise ValueError(f"a bug, with a secret in its text: {SECRET}")

    monkeypatch.setattr(Completion, "take_text", broken)
    caplog.set_level(logging.INFO)
    events = await stream(live_client, **{"X-Request-ID": "req-bug"})
    error = error_event(events)
    assert (error["code"], error["request_id"]) == ("INTERNAL_ERROR", "req-bug")
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged == ["unhandled ValueError in stream req-bug"]
    assert SECRET not in caplog.text
    assert [line["outcome"] for line in access_lines(caplog)] == ["error"]


async def test_a_finish_reason_without_done_marker_still_completes(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=[chunk("a"), FINISH]))
    events = await stream(live_client)
    assert events[-1][0] == "done"
    assert events[-1][1]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "reply",
    [Reply(chunks=[chunk("a"), chunk("b")]), Reply(chunks=[chunk("a"), chunk("b")], cut=True)],
    ids=["closed without finishing", "connection cut"],
)
async def test_a_stream_that_stops_short_is_an_upstream_error_after_its_text(
    live_client: Client, fake: FakeUpstream, reply: Reply
) -> None:
    fake.reply_with(reply)
    events = await stream(live_client)
    assert texts(events) == "ab"
    assert error_event(events)["code"] == "UPSTREAM_ERROR"


async def test_an_empty_body_is_an_http_error_not_an_empty_stream(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=[]))
    response = await live_client.post("/api/chat/stream", json=CHAT)
    assert_error(response.status_code, await response.get_data(), 502, "UPSTREAM_ERROR")


async def test_no_first_byte_in_time_is_an_http_504(live: LiveClient, fake: FakeUpstream) -> None:
    fake.reply_with(Reply(chunks=[], hang=True))
    async with live(request_timeout_seconds=0.3) as client:
        response = await client.post("/api/chat/stream", json=CHAT)
    assert_error(response.status_code, await response.get_data(), 504, "UPSTREAM_TIMEOUT")
    assert fake.wait_for_disconnect(timeout=5) is not None


async def test_a_silent_upstream_gets_pings_sent_and_loses_no_text(
    live: LiveClient, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["one ", "two ", "three "]), delay=0.25))
    async with live(sse_ping_seconds=0.1, request_timeout_seconds=2) as client:
        events = await stream(client)
    assert events.count(("comment", "ping")) >= 3
    assert texts(events) == "one two three "
    assert events[-1][0] == "done"


async def test_an_upstream_silent_past_the_timeout_ends_with_an_idle_timeout_and_is_closed(
    live: LiveClient, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["a"])[:2], hang=True))
    async with live(sse_ping_seconds=0.1, request_timeout_seconds=0.4) as client:
        events = await stream(client)
    assert events[0] == ("chunk", {"delta": "a"})
    assert ("comment", "ping") in events
    assert error_event(events)["code"] == "UPSTREAM_TIMEOUT"
    assert fake.wait_for_disconnect(timeout=5) is not None


async def test_a_reply_that_outlasts_the_framework_s_response_timeout_is_not_cut(
    live_client: Client, fake: FakeUpstream
) -> None:
    # Quart ends any response after RESPONSE_TIMEOUT (60 s by default); a stream opts out, since
    # its watch bounds each idle gap instead.
    live_client.app.config["RESPONSE_TIMEOUT"] = 0.2
    fake.reply_with(Reply(chunks=completion_chunks(["one ", "two ", "three "]), delay=0.1))
    events = await stream(live_client)
    assert texts(events) == "one two three "
    assert events[-1][0] == "done"


async def test_upstream_comments_keep_a_slow_stream_alive(
    live: LiveClient, fake: FakeUpstream
) -> None:
    # OpenRouter sends `: OPENROUTER PROCESSING` while a model thinks: the upstream is not idle.
    alive = b": OPENROUTER PROCESSING\n\n"
    pieces = [chunk("a"), alive, alive, alive, alive, alive, chunk("b"), FINISH, DONE]
    fake.reply_with(Reply(chunks=pieces, delay=0.15))
    async with live(sse_ping_seconds=5, request_timeout_seconds=0.5) as client:
        events = await stream(client)
    assert texts(events) == "ab"
    assert events[-1][0] == "done"


async def test_the_access_line_has_the_upstream_status_usage_and_outcome(
    live_client: Client, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake.reply_with(Reply(status=203, chunks=completion_chunks(["a", "b"])))
    body = {"messages": [{"role": "user", "content": "my private question"}]}
    response = await live_client.post(
        "/api/chat/stream", json=body, headers={"X-Request-ID": "abc-1"}
    )
    await response.get_data()
    (line,) = access_lines(caplog)
    assert (line["request_id"], line["path"], line["status"]) == ("abc-1", "/api/chat/stream", 200)
    assert line["upstream_status"] == 203
    assert line["outcome"] == "done"
    assert line["tokens"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert line["ttft_ms"] is not None and line["duration_ms"] >= line["ttft_ms"]
    assert SECRET not in caplog.text
    assert "my private question" not in caplog.text


async def test_deltas_that_arrive_in_one_read_go_out_as_one_event(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.replay_bytes(chunk("a") + chunk("b") + chunk("c") + FINISH + DONE)
    events = await stream(live_client)
    assert [e for e in events if e[0] == "chunk"] == [("chunk", {"delta": "abc"})]


async def leave_after(client: Client, text: bytes) -> None:
    """Start a stream, read until `text` has arrived, then hang up."""
    async with client.request(
        "/api/chat/stream", method="POST", headers={"Content-Type": "application/json"}
    ) as connection:
        await connection.send(orjson.dumps(CHAT))
        await connection.send_complete()
        received = b""
        while text not in received:
            received += await asyncio.wait_for(connection.receive(), 5)
        await connection.disconnect()


async def test_a_client_that_leaves_mid_stream_closes_the_upstream(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["partial"])[:2], hang=True))
    await leave_after(live_client, b"partial")
    assert await asyncio.to_thread(fake.wait_for_disconnect, 5) is not None


async def test_a_stream_whose_client_leaves_is_logged_as_disconnected(
    live_client: Client, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake.reply_with(Reply(chunks=completion_chunks(["partial"])[:2], hang=True))
    await leave_after(live_client, b"partial")
    assert [line["outcome"] for line in access_lines(caplog)] == ["disconnected"]


async def test_a_stream_ended_by_a_shutdown_is_logged_as_shutdown(
    live_client: Client, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake.reply_with(Reply(chunks=completion_chunks(["first "])[:2], hang=True))
    async with live_client.request(
        "/api/chat/stream", method="POST", headers={"Content-Type": "application/json"}
    ) as connection:
        await connection.send(orjson.dumps(CHAT))
        await connection.send_complete()
        received = b""
        while b"first" not in received:
            received += await asyncio.wait_for(connection.receive(), 5)
        live_client.app.extensions["streams"].drain(0)  # the grace period is over at once
        while b"event: error" not in received:
            received += await asyncio.wait_for(connection.receive(), 5)
    assert error_event(parse_events(received))["code"] == "SERVER_SHUTTING_DOWN"
    assert [line["outcome"] for line in access_lines(caplog)] == ["shutdown"]


async def test_the_first_output_is_reported_once_however_many_chunks_follow(
    live_client: Client, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported = []
    monkeypatch.setattr(AccessRecord, "first_output", lambda self: reported.append(self))
    fake.reply_with(Reply(chunks=completion_chunks(["a", "b", "c"]), delay=0.02))
    events = await stream(live_client)
    assert texts(events) == "abc"
    assert len(reported) == 1


async def test_done_without_a_finish_reason_still_completes(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=[chunk("a"), DONE]))
    events = await stream(live_client)
    assert events[-1][0] == "done"
    assert events[-1][1]["finish_reason"] is None

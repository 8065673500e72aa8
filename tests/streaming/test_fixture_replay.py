"""Every capture in tests/fixtures/sse/ (copies of ../shared/fixtures/sse) through the whole app, over a real socket.

The expected text, usage and outcome come from a deliberately simple, whole-body reference
decoder below -- a second implementation, so the incremental relay is checked against
something other than itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from quartchat import create_app
from quartchat.schemas import ChatRequest
from quartchat.streaming import relay
from quartchat.streaming.completion import Completion
from quartchat.streaming.encoders import OpenAIPassthrough
from quartchat.streaming.sse import SSEParser
from quartchat.streaming.watch import LiveStreams
from quartchat.upstream.client import UpstreamClient

from ..conftest import CHAT, FIXTURES, make_settings, parse_events
from ..fake_upstream import FakeUpstream

CAPTURES = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".sse", ".jsonl"))


@dataclass
class Expected:
    text: str
    usage: dict[str, int] | None
    outcome: str  # "done" or "error"
    payloads: list[str]  # the `data` of every chunk before the end, as sent


def wire_bytes(path: Path) -> list[bytes]:
    """The capture as network reads: exact recorded boundaries where known, else small odd pieces."""
    if path.suffix == ".jsonl":
        events = [
            b"data: " + line + b"\n\n" for line in path.read_bytes().splitlines() if line.strip()
        ]
        return [*events, b"data: [DONE]\n\n"]
    boundaries = path.with_name(path.name + ".chunks.json")
    if boundaries.exists():
        return [bytes.fromhex(h) for h in json.loads(boundaries.read_text())["chunks_hex"]]
    raw = path.read_bytes()
    return [raw[i : i + 37] for i in range(0, len(raw), 37)]


def reference(raw: bytes) -> Expected:
    text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    parts: list[str] = []
    payloads: list[str] = []
    usage = None
    finish = None
    for block in re.split(r"\n\n+", text):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if any(ln.startswith("error:") for ln in lines):
            return Expected("".join(parts), None, "error", payloads)
        data = "\n".join(ln[5:].removeprefix(" ") for ln in lines if ln.startswith("data:"))
        if not lines or not data:
            continue
        if data == "[DONE]":
            return Expected("".join(parts), usage, "done", payloads)
        try:
            obj: dict[str, Any] = json.loads(data)
        except ValueError:
            return Expected("".join(parts), None, "error", payloads)
        if obj.get("error"):
            return Expected("".join(parts), None, "error", payloads)
        payloads.append(data)
        if obj.get("usage"):
            usage = {
                k: obj["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")
            }
        for choice in obj.get("choices") or []:
            if choice.get("index", 0) == 0:
                delta = choice.get("delta") or {}
                parts.append(delta.get("content") or delta.get("refusal") or "")
                finish = choice.get("finish_reason") or finish
    return Expected("".join(parts), usage, "done" if finish else "error", payloads)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def app(fake: FakeUpstream) -> AsyncIterator[Quart]:
    app = create_app(make_settings(openai_api_base=fake.url))
    async with app.test_app():
        yield app


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
async def test_capture_relays_the_right_text_usage_and_outcome(
    app: Quart, fake: FakeUpstream, capture: Path
) -> None:
    pieces = wire_bytes(capture)
    expected = reference(b"".join(pieces))
    fake.replay_bytes(b"", pieces=pieces)

    response = await app.test_client().post("/api/chat/stream", json=CHAT)

    assert response.status_code == 200
    events = parse_events(await response.get_data())
    relayed = "".join(data["delta"] for kind, data in events if kind == "chunk")
    assert relayed == expected.text
    kind, last = events[-1]
    assert kind == expected.outcome
    if kind == "done":
        assert last["message"]["content"] == expected.text
        assert last["usage"] == expected.usage
    else:
        assert last["error"]["code"] == "UPSTREAM_ERROR"


def test_the_interesting_captures_are_really_exercised() -> None:
    """Guard against the reference decoder going blind: pin what a few captures must contain."""
    by_name = {p.name: reference(b"".join(wire_bytes(p))) for p in CAPTURES}
    assert len(CAPTURES) >= 19
    assert by_name["openai_chat_refusal.sse"].text.startswith("I'm")  # refusal deltas are text
    assert by_name["groq_text.chunks.jsonl"].usage is not None  # usage on the finish chunk
    assert by_name["deepseek_text.chunks.jsonl"].usage is not None
    assert by_name["openai_chat_text_usage.sse"].usage is not None  # separate usage chunk
    assert by_name["openai_chat_parallel_tool_calls.sse"].text == ""  # tool calls: no text
    assert by_name["openai_chat_parallel_tool_calls.sse"].outcome == "done"
    assert by_name["llamacpp_legacy_error_field.sse"].outcome == "error"
    assert by_name["openai_midstream_error_go_openai_pr396.sse"].outcome == "error"
    assert by_name["azure_chat_prompt_filter_results.sse"].outcome == "done"
    assert by_name["openai_chat_n3_multiple_choices.sse"].text  # choice 0 of three


async def test_u2028_and_characters_split_between_reads_survive_the_relay(
    app: Quart, fake: FakeUpstream
) -> None:
    # The openai-python vectors above are not chat-shaped; this is their point, in chat form.
    words = [" culpa", " \u2028", "\u0085😀", "изменить"]
    raw = (
        b"".join(
            b"data: "
            + json.dumps(
                {"choices": [{"index": 0, "delta": {"content": w}}]}, ensure_ascii=False
            ).encode()
            + b"\n\n"
            for w in words
        )
        + b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    fake.replay_bytes(b"", pieces=[raw[i : i + 1] for i in range(len(raw))])

    events = parse_events(
        await (await app.test_client().post("/api/chat/stream", json=CHAT)).get_data()
    )

    assert "".join(d["delta"] for k, d in events if k == "chunk") == "".join(words)
    assert events[-1][1]["message"]["content"] == "".join(words)


class Quiet:
    """An observer that only remembers how the stream ended."""

    outcome = ""

    def opened(self, upstream_status: int, completion: Completion) -> None:
        pass

    def first_output(self) -> None:
        pass

    async def ended(self, outcome: str, completion: Completion, error: object) -> None:
        self.outcome = outcome


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
async def test_capture_passes_through_with_the_same_events_and_bytes(
    fake: FakeUpstream, capture: Path
) -> None:
    """The OpenAI passthrough encoder re-emits every chunk as sent, tool calls and n>1 included."""
    pieces = wire_bytes(capture)
    expected = reference(b"".join(pieces))
    fake.replay_bytes(b"", pieces=pieces)
    upstream = UpstreamClient(make_settings(openai_api_base=fake.url))
    observer = Quiet()
    try:
        body = await relay.start(
            partial(upstream.open_stream, ChatRequest.model_validate(CHAT)),
            OpenAIPassthrough(),
            LiveStreams(ping_seconds=15, idle_seconds=60),
            observer,
            "req-1",
        )
        out = b"".join([piece async for piece in body])
    finally:
        await upstream.aclose()

    parser = SSEParser()
    events = parser.feed(out) + parser.close()
    assert all(kind == "" for kind, _ in events)
    datas = [data for _, data in events]
    assert observer.outcome == expected.outcome
    if expected.outcome == "done":
        assert datas == [*expected.payloads, "[DONE]"]
    else:
        assert datas[:-1] == expected.payloads
        assert json.loads(datas[-1])["error"]["code"] == "UPSTREAM_ERROR"

"""A naive Quart relay: `POST /api/chat` and `POST /api/chat/stream` straight to the upstream.

The floor quartchat's own code is measured against on the same server (issue 19): the same
framework, the same HTTP client (httpx on quartchat's aiohttp transport) and the same wire
formats (our `chunk` / `done` events, the upstream's JSON), the same fast parts (orjson, the
upstream's bytes as read, events split on their blank line), and none of quartchat's work: the
job in its fewest lines, so the difference is quartchat's own code (guards, the gate, the access
record, validation, the fold, timers). Serve it with any ASGI server:

    OPENAI_API_BASE=http://127.0.0.1:9100/v1 hypercorn bench.peers.naive_quart:app
    OPENAI_API_BASE=... uvicorn --loop uvloop --http httptools bench.peers.naive_quart:app
    OPENAI_API_BASE=... granian --interface asgi bench.peers.naive_quart:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from quart import Quart, Response, request

# quartchat's HTTP client is httpx on this transport (aiohttp's connection pool): httpx's own
# pool costs ~2 ms of CPU per request at 50 concurrent requests, ten times what quartchat pays.
from quartchat.upstream.transport import AiohttpTransport

BASE = os.environ.get("OPENAI_API_BASE", "http://127.0.0.1:9100/v1").rstrip("/")
KEY = os.environ.get("OPENAI_API_KEY", "sk-naive")
MODEL = os.environ.get("OPENAI_MODEL", "fake-large")

app = Quart(__name__)
client: httpx.AsyncClient


@app.before_serving
async def _open() -> None:
    global client
    client = httpx.AsyncClient(
        base_url=BASE,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
        transport=AiohttpTransport(max_connections=2000),
    )


@app.after_serving
async def _close() -> None:
    await client.aclose()


def _body(payload: dict[str, Any], stream: bool) -> dict[str, Any]:
    return {
        "model": payload.get("model") or MODEL,
        "messages": payload["messages"],
        "stream": stream,
    }


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def _json(data: object) -> Response:
    return Response(orjson.dumps(data), content_type="application/json")


@app.post("/api/chat")
async def chat() -> Response:
    payload = orjson.loads(await request.get_data())
    upstream = await client.post(
        "/chat/completions",
        content=orjson.dumps(_body(payload, False)),
        headers={"Content-Type": "application/json"},
    )
    data = orjson.loads(upstream.content)
    choice = data["choices"][0]
    return _json(
        {
            "id": data.get("id"),
            "model": data.get("model"),
            "message": {"role": "assistant", "content": choice["message"]["content"]},
            "finish_reason": choice.get("finish_reason"),
            "usage": data.get("usage"),
        }
    )


@app.post("/api/chat/stream")
async def chat_stream() -> Response:
    payload = orjson.loads(await request.get_data())

    async def events() -> AsyncIterator[bytes]:
        text: list[str] = []
        rest = b""
        async with client.stream(
            "POST",
            "/chat/completions",
            content=orjson.dumps(_body(payload, True)),
            headers={"Content-Type": "application/json"},
        ) as upstream:
            async for data in upstream.aiter_raw():
                # Events end with a blank line; what follows the last one waits for the next read.
                *whole, rest = (rest + data).split(b"\n\n")
                out = []
                for event in whole:
                    if not event.startswith(b"data: ") or event == b"data: [DONE]":
                        continue
                    choices = orjson.loads(event[6:]).get("choices") or [{}]
                    delta = (choices[0].get("delta") or {}).get("content")
                    if delta:
                        text.append(delta)
                        out.append(
                            b"event: chunk\ndata: " + orjson.dumps({"delta": delta}) + b"\n\n"
                        )
                if out:
                    yield b"".join(out)
        done = {"message": {"role": "assistant", "content": "".join(text)}}
        yield b"event: done\ndata: " + orjson.dumps(done) + b"\n\n"

    return Response(events(), content_type="text/event-stream")

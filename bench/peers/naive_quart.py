"""A naive Quart relay: `POST /api/chat` and `POST /api/chat/stream` straight to the upstream.

The floor quartchat's own code is measured against on the same server (issue 19): the same
framework, the same HTTP client (httpx on quartchat's aiohttp transport) and the same wire
formats (our `chunk` / `done` events, the upstream's JSON), and none of quartchat's work. Serve it with any ASGI server:

    OPENAI_API_BASE=http://127.0.0.1:9100/v1 hypercorn bench.peers.naive_quart:app
    OPENAI_API_BASE=... uvicorn --loop uvloop --http httptools bench.peers.naive_quart:app
    OPENAI_API_BASE=... granian --interface asgi bench.peers.naive_quart:app
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
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


@app.post("/api/chat")
async def chat() -> dict[str, Any]:
    payload = await request.get_json()
    upstream = await client.post("/chat/completions", json=_body(payload, False))
    data = upstream.json()
    choice = data["choices"][0]
    return {
        "id": data.get("id"),
        "model": data.get("model"),
        "message": {"role": "assistant", "content": choice["message"]["content"]},
        "finish_reason": choice.get("finish_reason"),
        "usage": data.get("usage"),
    }


@app.post("/api/chat/stream")
async def chat_stream() -> Response:
    payload = await request.get_json()

    async def events() -> AsyncIterator[bytes]:
        text: list[str] = []
        async with client.stream(
            "POST", "/chat/completions", json=_body(payload, True)
        ) as upstream:
            async for line in upstream.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choices = chunk.get("choices") or [{}]
                delta = (choices[0].get("delta") or {}).get("content")
                if delta:
                    text.append(delta)
                    yield b"event: chunk\ndata: " + json.dumps({"delta": delta}).encode() + b"\n\n"
        done = {"message": {"role": "assistant", "content": "".join(text)}}
        yield b"event: done\ndata: " + json.dumps(done).encode() + b"\n\n"

    return Response(events(), content_type="text/event-stream")

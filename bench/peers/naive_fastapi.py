# mypy: disable-error-code="untyped-decorator,unused-ignore"
"""A naive FastAPI relay (the common tutorial shape), for `relay_bench.py --peers` only.

    OPENAI_API_BASE=http://127.0.0.1:9100/v1 uvicorn bench.peers.naive_fastapi:app

Same routes and wire formats as naive_quart.py; needs `pip install fastapi` (bench only).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request  # type: ignore[import-not-found]
from fastapi.responses import StreamingResponse  # type: ignore[import-not-found]

BASE = os.environ.get("OPENAI_API_BASE", "http://127.0.0.1:9100/v1").rstrip("/")
KEY = os.environ.get("OPENAI_API_KEY", "sk-naive")
MODEL = os.environ.get("OPENAI_MODEL", "fake-large")
state: dict[str, httpx.AsyncClient] = {}


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    state["client"] = httpx.AsyncClient(
        base_url=BASE,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
        limits=httpx.Limits(max_connections=2000, max_keepalive_connections=2000),
    )
    yield
    await state["client"].aclose()


app = FastAPI(lifespan=lifespan)


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
async def chat(request: Request) -> dict[str, Any]:
    payload = await request.json()
    upstream = await state["client"].post("/chat/completions", json=_body(payload, False))
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
async def chat_stream(request: Request) -> StreamingResponse:
    payload = await request.json()

    async def events() -> AsyncIterator[bytes]:
        text: list[str] = []
        async with state["client"].stream(
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

    return StreamingResponse(events(), media_type="text/event-stream")

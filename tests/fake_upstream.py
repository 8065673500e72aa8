"""A fake OpenAI-compatible server on a real socket, for end-to-end tests and the benchmark.

It runs its own event loop in a background thread, so sync tests (Playwright), async tests and
scripts can all use it. By default `POST /v1/chat/completions` answers "Echo: <last user message>"
word by word; a test can queue exact replies (`reply_with`, `replay_bytes`) and inspect what the
server saw (`requests`) and when clients hung up (`wait_for_disconnect`).

    python -m tests.fake_upstream --port 9100 --chunks 200 --interval 0.02   # for bench/
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MODELS = ["fake-large", "fake-small", "gpt-4o-mini"]


@dataclass
class Reply:
    """One scripted answer: a status, headers and body pieces sent `delay` seconds apart."""

    status: int = 200
    chunks: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/event-stream"})
    delay: float = 0.0
    hang: bool = False  # after the chunks, keep the connection open and send nothing more
    cut: bool = False  # after the chunks, drop the connection without ending the body
    # When set, each piece after the first waits for one release() of this semaphore, so a
    # test can look at the page between two pieces instead of guessing with a delay.
    step: threading.Semaphore | None = None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def sse_chunk(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def openai_chunk(payload: dict[str, Any]) -> bytes:
    """As OpenAI writes a chunk: compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


TOOL_ARGUMENTS = ['{"city"', ': "Paris"}']


def tool_call_chunks(name: str, *, model: str, n: int = 1) -> list[dict[str, Any]]:
    """A streamed call of the tool `name` (per choice of `n`), in OpenAI's chunk payloads."""
    base = {"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1700000000}
    base["model"] = model
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name}}
    out: list[dict[str, Any]] = []
    for i in range(n):
        first = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{**call, "function": {"name": name, "arguments": ""}}],
        }
        out.append({**base, "choices": [{"index": i, "delta": first, "finish_reason": None}]})
        for piece in TOOL_ARGUMENTS:
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            out.append({**base, "choices": [{"index": i, "delta": delta, "finish_reason": None}]})
        out.append({**base, "choices": [{"index": i, "delta": {}, "finish_reason": "tool_calls"}]})
    return out


def completion_chunks(
    words: list[str], *, model: str = "fake-large", usage: bool = True, finish: str = "stop"
) -> list[bytes]:
    """An OpenAI-shaped stream: role chunk, one chunk per word, finish chunk, usage, [DONE]."""
    return [
        sse_chunk(p) if isinstance(p, dict) else p
        for p in completion_payloads(words, model=model, usage=usage, finish=finish)
    ]


def completion_payloads(
    words: list[str],
    *,
    model: str = "fake-large",
    usage: bool = True,
    finish: str = "stop",
    n: int = 1,
    tool: str | None = None,
) -> list[dict[str, Any] | bytes]:
    """`completion_chunks`' payloads (`n` choices, or a call of `tool`), before framing."""
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
    }
    out: list[dict[str, Any] | bytes] = []
    if tool is not None:
        out += tool_call_chunks(tool, model=model, n=n)
        words = []
    for i in range(n if tool is None else 0):
        out += [{**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}}]}]
        out += [
            {**base, "choices": [{"index": i, "delta": {"content": w}, "finish_reason": None}]}
            for w in words
        ]
        out.append({**base, "choices": [{"index": i, "delta": {}, "finish_reason": finish}]})
    if usage:
        count = len(words) * n
        out.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": count,
                    "total_tokens": 5 + count,
                },
            }
        )
    out.append(b"data: [DONE]\n\n")
    return out


def split_words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class FakeUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[Seen] = []
        self.disconnects: list[float] = []
        # Monotonic time each reply's last piece was about to go out: taken before the write, so
        # it is on the list before anything that piece (`[DONE]`, say) causes can reach a client.
        self.last_pieces_sent: list[float] = []
        self.replies: deque[Reply] = deque()
        self.default_delay = 0.0
        self.bench_chunks: int | None = None  # when set: that many chunks of "tok" per reply
        self.reject_stream_options = False
        # As OpenAI streams: compact JSON, and `"usage":null` on every chunk when usage is asked.
        self.openai_format = False
        self.models_rejecting_stream_options: set[str] = set()  # only these, when not all
        self.models = list(MODELS)  # what GET /models lists, in this order
        self.open_connections = 0
        self._disconnected = threading.Event()
        self._hangups = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reply_with(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def replay_bytes(
        self, data: bytes, *, pieces: list[bytes] | None = None, delay: float = 0.0
    ) -> None:
        self.replies.append(Reply(chunks=pieces if pieces is not None else [data], delay=delay))

    def chat_requests(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def wait_for_disconnect(self, timeout: float) -> float | None:
        """Monotonic time of the first client hang-up during a reply, or None."""
        if self._disconnected.wait(timeout):
            return self.disconnects[0]
        return None

    def wait_for_disconnects(self, count: int, timeout: float) -> bool:
        """Whether `count` client hang-ups during replies have been seen in all, waiting if need be.

        Unlike `wait_for_disconnect`, usable again and again on one long-lived server.
        """
        with self._hangups:
            return self._hangups.wait_for(lambda: len(self.disconnects) >= count, timeout)

    def start(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, self.host, self.port, backlog=4096)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop serving (its port then refuses connections); again does nothing."""
        if self._loop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            while await self._request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        seen = Seen(method, path, headers, body)
        self.requests.append(seen)
        if method == "GET" and path.endswith("/models"):
            data = {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
            await self._send_whole(writer, 200, json.dumps(data).encode())
            return True
        if method == "POST" and path.endswith("/embeddings"):
            reply = self.replies.popleft() if self.replies else None
            if reply is not None:
                await self._send_whole(writer, reply.status, b"".join(reply.chunks), reply.headers)
            else:
                await self._send_whole(writer, 200, self._embeddings(seen.json))
            return True
        if method != "POST" or not path.endswith("/chat/completions"):
            await self._send_whole(writer, 404, b'{"error": {"message": "no such route"}}')
            return True
        return await self._chat(seen, reader, writer)

    async def _send_whole(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = "".join(
            f"{k}: {v}\r\n" for k, v in (headers or {"Content-Type": "application/json"}).items()
        )
        writer.write(
            f"HTTP/1.1 {status} X\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        await writer.drain()

    def _default_reply(self, request: dict[str, Any]) -> Reply:
        messages = request.get("messages")
        last = next(
            (
                m.get("content", "")
                for m in reversed(messages if isinstance(messages, list) else [])
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            "",
        )
        words = ["tok"] * self.bench_chunks if self.bench_chunks else split_words(f"Echo: {last}")
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        model = str(request.get("model", "fake-large"))
        asked_n = request.get("n")
        n = asked_n if type(asked_n) is int and 1 <= asked_n <= 8 else 1
        tools = request.get("tools")
        tool = None
        if isinstance(tools, list) and tools and isinstance(tools[0], dict):
            tool = str((tools[0].get("function") or {}).get("name", "tool"))
        if not request.get("stream"):
            text = "".join(words)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool is not None:
                arguments = "".join(TOOL_ARGUMENTS)
                function = {"name": tool, "arguments": arguments}
                call = {"id": "call_1", "type": "function", "function": function}
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
            body = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {
                        "index": i,
                        "message": message,
                        "finish_reason": "stop" if tool is None else "tool_calls",
                    }
                    for i in range(n)
                ],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": len(words) * n,
                    "total_tokens": 5 + len(words) * n,
                },
            }
            return Reply(
                chunks=[json.dumps(body).encode()], headers={"Content-Type": "application/json"}
            )
        payloads = completion_payloads(words, model=model, usage=usage, n=n, tool=tool)
        if not self.openai_format:
            chunks = [sse_chunk(p) if isinstance(p, dict) else p for p in payloads]
        else:  # compact, and `"usage":null` on every chunk but the usage's when it is asked for
            nulls = {"usage": None} if usage else {}
            chunks = [
                p if isinstance(p, bytes) else openai_chunk(p if "usage" in p else {**p, **nulls})
                for p in payloads
            ]
        return Reply(chunks=chunks, delay=self.default_delay)

    def _embeddings(self, request: Any) -> bytes:
        given = request.get("input") if isinstance(request, dict) else None
        inputs = given if isinstance(given, list) else [given]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.25, -0.5, float(i)]}
            for i in range(len(inputs))
        ]
        model = request.get("model") if isinstance(request, dict) else None
        usage = {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}
        body = {"object": "list", "data": data, "model": model, "usage": usage}
        return json.dumps(body).encode()

    async def _chat(
        self, seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        request = seen.json
        refuses = self.reject_stream_options or request.get("model") in (
            self.models_rejecting_stream_options
        )
        if refuses and "stream_options" in request:
            body = (
                b'{"error": {"message": "Unrecognized request argument supplied: stream_options"}}'
            )
            await self._send_whole(writer, 400, body)
            return True
        reply = self.replies.popleft() if self.replies else self._default_reply(request)
        head = f"HTTP/1.1 {reply.status} X\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in reply.headers.items()
        )
        writer.write((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        # The client sends nothing more during a reply: a read that ends means it hung up.
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            for i, piece in enumerate(reply.chunks):
                if i and reply.delay:
                    await asyncio.wait({hangup}, timeout=reply.delay)
                if i and reply.step:
                    await _released(reply.step, hangup)
                if hangup.done():
                    return self._hung_up()
                if i == len(reply.chunks) - 1:
                    self.last_pieces_sent.append(time.monotonic())
                if piece:
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
            if reply.hang:
                await asyncio.wait({hangup}, timeout=60)
                return self._hung_up() if hangup.done() else False
            if reply.cut:
                writer.transport.abort()
                return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        except ConnectionError:
            return self._hung_up()
        finally:
            if not hangup.done():
                hangup.cancel()
                # Let the cancelled read finish before this connection's next request reads.
                await asyncio.wait({hangup})

    def _hung_up(self) -> bool:
        with self._hangups:
            self.disconnects.append(time.monotonic())
            self._hangups.notify_all()
        self._disconnected.set()
        return False


async def _released(step: threading.Semaphore, hangup: asyncio.Future[bytes]) -> None:
    """Wait for one release of `step` (30 s at most), or until the client hangs up: a client that
    closes its stream while the reply is held is seen at once (a stop's test looks for that)."""
    deadline = time.monotonic() + 30
    while not hangup.done() and time.monotonic() < deadline:
        if await asyncio.to_thread(step.acquire, timeout=0.05):
            return


def main(
    upstream: type[FakeUpstream] = FakeUpstream,
    *,
    chunks: int | None = None,
    interval: float = 0.0,
    description: str | None = None,
) -> None:
    """Serve `upstream` until Ctrl-C (`python -m tests.fake_upstream`; bench/upstream.py too)."""
    doc = description or (__doc__.splitlines()[0] if __doc__ else None)
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunks", type=int, default=chunks, help="chunks per streamed reply")
    parser.add_argument("--interval", type=float, default=interval, help="seconds between chunks")
    args = parser.parse_args()
    fake = upstream(args.host, args.port)
    fake.bench_chunks = args.chunks
    fake.default_delay = args.interval
    fake.start()
    print(f"{upstream.__name__} on {fake.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()

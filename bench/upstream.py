"""The fake upstream of tests/fake_upstream.py, made cheap enough to pace 1000 streams on a shared core.

    python -m bench.upstream --port 9100 --chunks 200 --interval 0.02

Same routes, same wire format (`completion_chunks`, chunked transfer encoding, the same non-streamed
JSON), same request parsing: only the default reply's delivery differs, because the test fixture's
costs the benchmark more than the service it measures:

* replies are built once and cached (the fixture spends ~0.5 ms of CPU JSON-encoding 200 chunks
  for every request, which at 1000 concurrent streams delays the last stream's start by ~0.5 s);
* chunk i is written at start + i * interval (a fixed schedule that does not drift under load),
  after a plain `asyncio.sleep`, and a hang-up is seen as EOF on the reader, instead of racing an
  `asyncio.wait` against a pending `reader.read(1)` for every chunk;
* a connection stays usable after a streamed reply (the fixture's cancelled `read(1)` is still
  waiting when the next request's `readuntil()` starts, which raises RuntimeError and drops the
  connection, so keep-alive never survives a stream);
* it runs on uvloop and keeps only the last requests it saw.

Scripted replies (`reply_with`, `replay_bytes`) and `reject_stream_options` still go through the
fixture's own code.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from tests.fake_upstream import FakeUpstream, Reply, Seen
from tests.fake_upstream import main as serve

_LIMIT = 256 * 1024  # write-buffer bytes above which a stream waits for the socket to drain


class BenchUpstream(FakeUpstream):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.requests = deque(maxlen=100)  # type: ignore[assignment]
        self._cache: dict[tuple[bool, str, bool], tuple[bytes, list[bytes], float]] = {}

    def _framed(self, request: dict[str, Any]) -> tuple[bytes, list[bytes], float]:
        """(status line and headers, chunked-framed body pieces, delay) for the default reply."""
        stream = bool(request.get("stream"))
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        key = (stream, str(request.get("model", "fake-large")), usage)
        cached = self._cache.get(key)
        if cached is None or not self.bench_chunks:
            reply: Reply = self._default_reply(request)
            head = (
                f"HTTP/1.1 {reply.status} X\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                + "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
            pieces = [b"%x\r\n%s\r\n" % (len(p), p) for p in reply.chunks if p]
            cached = (head, pieces, reply.delay)
            if self.bench_chunks:  # the echo reply depends on the message, so only bench replies
                self._cache[key] = cached
        return cached

    async def _chat(
        self, seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if self.replies or self.reject_stream_options:
            return await super()._chat(seen, reader, writer)
        head, pieces, delay = self._framed(json.loads(seen.body))
        transport = writer.transport
        if not delay or len(pieces) < 2:
            transport.write(head + b"".join(pieces) + b"0\r\n\r\n")
            await writer.drain()
            return True
        loop = asyncio.get_running_loop()
        start = loop.time()
        transport.write(head + pieces[0])
        try:
            for i in range(1, len(pieces)):
                await asyncio.sleep(max(0.0, start + i * delay - loop.time()))
                if reader.at_eof() or transport.is_closing():
                    return self._hung_up()
                transport.write(pieces[i])
                if transport.get_write_buffer_size() > _LIMIT:
                    await writer.drain()
            transport.write(b"0\r\n\r\n")
            return True
        except ConnectionError:
            return self._hung_up()


def main() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        pass
    else:  # the server thread's `asyncio.new_event_loop()` then makes a uvloop loop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    serve(BenchUpstream, chunks=200, interval=0.02, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()

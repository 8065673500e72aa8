"""Two quartchat processes (`python -m quartchat`, each on its own port) sharing one PostgreSQL and
one Redis, as two hosts behind a load balancer: a reply run by one is read, stopped and counted
through the other, and survives Redis going away."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import URL

from ..auth.conftest import PASSWORD
from ..conftest import SERVERS, _create_database
from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from ..redis_server import RedisServer
from ..service import Service

pytestmark = pytest.mark.e2e

ADMIN = {"email": "me@example.com", "password": PASSWORD}
DEADLINE = 30.0
WORDS = [f"w{i} " for i in range(40)]
FULL = "".join(WORDS)

Pair = Callable[..., tuple[Service, Service]]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    """Each test here that runs the service runs on each server."""
    return str(request.param)


@pytest.fixture
def pair(
    postgres_server: URL | None,
    postgres_template: URL | None,
    redis_server: RedisServer,
    fake: FakeUpstream,
    server: str,
) -> Iterator[Pair]:
    """`pair(**env)`: services A and B on one new database and `redis_server` (B's environment
    may differ: `b_env`)."""
    if postgres_server is None or postgres_template is None:
        pytest.skip("no PostgreSQL here (apt-get install postgresql, or set TEST_DATABASE_URL)")
    name = f"test_pair_{time.monotonic_ns()}"
    asyncio.run(_create_database(postgres_server, name, postgres_template.database))
    url = postgres_server.set(database=name).render_as_string(hide_password=False)
    started: list[Service] = []

    def start(b_env: dict[str, str] | None = None, **env: str) -> tuple[Service, Service]:
        shared = {
            "SERVER": server,
            "AUTH_MODE": "accounts",
            "DATABASE_URL": url,
            "REDIS_URL": redis_server.url,
            "SECRET_KEY": "a-secret-both-processes-share-0123456789",
            "ADMIN_EMAIL": ADMIN["email"],
            "ADMIN_PASSWORD": ADMIN["password"],
            "SHUTDOWN_GRACE_SECONDS": "1",
            **env,
        }
        a = Service(fake.url, **shared).start()
        started.append(a)
        b = Service(fake.url, **{**shared, **(b_env or {})}).start()
        started.append(b)
        return a, b

    yield start
    for service in started:
        service.stop()


def logged_in(a: Service, b: Service) -> tuple[httpx.Client, httpx.Client]:
    """A browser's client of A, and one of B with the same session."""
    on_a = httpx.Client(base_url=a.url, timeout=DEADLINE)
    assert on_a.post("/api/auth/login", json=ADMIN).status_code == 200
    return on_a, httpx.Client(base_url=b.url, cookies=on_a.cookies, timeout=DEADLINE)


class Reader:
    """One streamed request in a thread of its own: the bytes as they come."""

    def __init__(self, client: httpx.Client, method: str, url: str, **how: Any) -> None:
        self.body = b""
        self.headers: httpx.Headers | None = None
        self.ended_at: float | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._read, args=(client, method, url, how), daemon=True
        )
        self._thread.start()

    def _read(self, client: httpx.Client, method: str, url: str, how: dict[str, Any]) -> None:
        try:
            with client.stream(method, url, **how) as response:
                with self._changed:
                    self.headers = response.headers
                    self._changed.notify_all()
                for piece in response.iter_raw():
                    with self._changed:
                        self.body += piece
                        self._changed.notify_all()
        except httpx.HTTPError:
            pass  # its server was killed under it
        finally:
            with self._changed:
                self.ended_at = time.monotonic()
                self._changed.notify_all()

    def until(self, done: Callable[[Reader], bool], timeout: float = DEADLINE) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: done(self), timeout), self.body[-300:]

    def has(self, marker: bytes) -> Callable[[Reader], bool]:
        return lambda reader: marker in reader.body

    def ended(self, timeout: float = DEADLINE) -> bytes:
        self.until(lambda reader: reader.ended_at is not None, timeout)
        return self.body


def events(body: bytes) -> list[tuple[str | None, str, Any]]:
    """(id, event, data) of each event; pings left out."""
    out: list[tuple[str | None, str, Any]] = []
    for block in body.decode().split("\n\n"):
        if block and not block.startswith(":"):
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            out.append((fields.get("id"), fields["event"], orjson.loads(fields["data"])))
    return out


def text_of(found: list[tuple[str | None, str, Any]]) -> str:
    return "".join(data["delta"] for _, kind, data in found if kind == "chunk")


def start_turn(client: httpx.Client, conversation_id: str) -> tuple[Reader, str]:
    turn = Reader(
        client,
        "POST",
        f"/api/conversations/{conversation_id}/messages",
        json={"content": "go", "client_id": "c-1"},
    )
    turn.until(lambda reader: reader.headers is not None)
    assert turn.headers is not None
    return turn, turn.headers["Quartchat-Reply-Id"]


def reply_events(client: httpx.Client, conversation_id: str, reply_id: str, **how: Any) -> Reader:
    return Reader(
        client, "GET", f"/api/conversations/{conversation_id}/messages/{reply_id}/events", **how
    )


def test_a_reply_started_on_a_is_followed_on_b_from_its_last_event_id_exactly(
    pair: Pair, fake: FakeUpstream
) -> None:
    a, b = pair()
    on_a, on_b = logged_in(a, b)
    made = on_a.post("/api/conversations", json={}).json()
    step = threading.Semaphore(0)
    fake.reply_with(Reply(chunks=completion_chunks(WORDS), step=step))
    turn, reply_id = start_turn(on_a, made["id"])
    whole = reply_events(on_a, made["id"], reply_id)  # what a reader on A gets, to compare
    step.release(11)
    turn.until(turn.has(b"w9 "))
    cut = events(turn.body)[-1][0]
    assert cut is not None
    moved = reply_events(on_b, made["id"], reply_id, headers={"Last-Event-ID": cut})
    moved.until(lambda reader: reader.headers is not None)
    step.release(100)
    expected = events(whole.ended())
    at = [event_id for event_id, _, _ in expected].index(cut)
    assert events(moved.ended()) == expected[at + 1 :]  # the same events, ids and all
    assert text_of(expected) == FULL and expected[-1][1] == "done"


def test_a_stop_sent_to_b_closes_the_upstream_held_by_a_within_a_second(
    pair: Pair, fake: FakeUpstream
) -> None:
    a, b = pair()
    on_a, on_b = logged_in(a, b)
    made = on_a.post("/api/conversations", json={}).json()
    fake.reply_with(Reply(chunks=completion_chunks(["so far"])[:2], hang=True))
    turn, reply_id = start_turn(on_a, made["id"])
    turn.until(turn.has(b"so far"))
    asked = time.monotonic()
    stop = on_b.post(f"/api/conversations/{made['id']}/messages/{reply_id}/stop", json={})
    assert stop.json() == {"ok": True, "status": "stopped"}
    closed = fake.wait_for_disconnect(DEADLINE)
    assert closed is not None and closed - asked < 1.0
    end = events(turn.ended())[-1]
    assert end[1] == "error" and end[2]["error"]["code"] == "REPLY_STOPPED"


def test_a_reader_on_b_learns_within_5_seconds_that_a_was_killed(
    pair: Pair, fake: FakeUpstream
) -> None:
    a, b = pair()
    on_a, on_b = logged_in(a, b)
    made = on_a.post("/api/conversations", json={}).json()
    fake.reply_with(Reply(chunks=completion_chunks(["so far"])[:2], hang=True))
    turn, reply_id = start_turn(on_a, made["id"])
    turn.until(turn.has(b"so far"))
    reader = reply_events(on_b, made["id"], reply_id)
    reader.until(reader.has(b"so far"))
    assert a.process is not None
    a.process.kill()
    a.process.wait(10)
    killed = time.monotonic()
    body = reader.ended()
    assert reader.ended_at is not None and reader.ended_at - killed < 5.0
    end = events(body)[-1]
    assert end[0] == "6.end" and end[2]["error"]["code"] == "REPLY_INTERRUPTED"


async def test_the_per_user_limit_holds_across_a_and_b_under_50_concurrent_turns(
    pair: Pair, fake: FakeUpstream
) -> None:
    a, b = pair(MAX_STREAMS_PER_USER="3")
    on_a, _ = logged_in(a, b)
    made = [on_a.post("/api/conversations", json={}).json()["id"] for _ in range(50)]
    fake.reply_with(*[Reply(chunks=completion_chunks(["x"])[:2], hang=True) for _ in range(50)])
    cookies = dict(on_a.cookies)
    statuses: list[int] = []
    async with (
        httpx.AsyncClient(base_url=a.url, cookies=cookies, timeout=DEADLINE) as to_a,
        httpx.AsyncClient(base_url=b.url, cookies=cookies, timeout=DEADLINE) as to_b,
    ):
        held: list[httpx.Response] = []

        async def attempt(client: httpx.AsyncClient, conversation_id: str) -> None:
            request = client.build_request(
                "POST",
                f"/api/conversations/{conversation_id}/messages",
                json={"content": "go", "client_id": "c-1"},
            )
            response = await client.send(request, stream=True)
            statuses.append(response.status_code)
            held.append(response)  # an admitted turn stays open until all are decided

        await asyncio.gather(*(attempt(to_a if i % 2 else to_b, cid) for i, cid in enumerate(made)))
        for response in held:
            await response.aclose()
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == 3


def test_redis_stopped_mid_reply_the_reply_is_saved_and_b_reads_it_whole_from_the_database(
    pair: Pair, fake: FakeUpstream, redis_server: RedisServer
) -> None:
    a, b = pair()
    on_a, on_b = logged_in(a, b)
    made = on_a.post("/api/conversations", json={}).json()
    step = threading.Semaphore(0)
    fake.reply_with(Reply(chunks=completion_chunks(WORDS), step=step))
    turn, reply_id = start_turn(on_a, made["id"])
    step.release(6)
    turn.until(turn.has(b"w4 "))
    reader = reply_events(on_b, made["id"], reply_id)
    reader.until(reader.has(b"w4 "))
    redis_server.stop()
    step.release(100)
    assert text_of(events(turn.ended())) == FULL
    found = events(reader.ended())
    assert text_of(found) == FULL and found[-1][:2] == (f"{len(FULL)}.end", "done")
    saved = on_b.get(f"/api/conversations/{made['id']}").json()
    reply = next(m for m in saved["messages"] if m["id"] == reply_id)
    assert (reply["content"], reply["status"]) == (FULL, "complete")
    assert redis_server.password is not None and redis_server.password not in a.log() + b.log()

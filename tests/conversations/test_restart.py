"""A service killed mid-reply: after the restart the reply is there, interrupted, its text kept."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from ..auth.conftest import PASSWORD
from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from ..service import Service

pytestmark = pytest.mark.e2e

ADMIN = {"email": "me@example.com", "password": PASSWORD}


def test_a_reply_cut_by_kill_9_is_found_interrupted_after_the_restart(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    env = {
        "AUTH_MODE": "accounts",
        "DATA_DIR": str(tmp_path),
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
    }
    fake.reply_with(Reply(chunks=completion_chunks([f"word{i} " for i in range(80)]), delay=0.1))
    with Service(fake.url, **env) as service, httpx.Client(base_url=service.url) as browser:
        assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
        made = browser.post("/api/conversations", json={}).json()

        def send() -> None:
            try:
                body = {"content": "a long answer", "client_id": "c-1"}
                with browser.stream(
                    "POST", f"/api/conversations/{made['id']}/messages", json=body
                ) as r:
                    for _ in r.iter_raw():
                        pass
            except httpx.HTTPError:
                pass  # the service is killed under it

        threading.Thread(target=send, daemon=True).start()
        # Killed once the first checkpoint (every 3 s) is in the database, while it streams.
        with httpx.Client(base_url=service.url, cookies=browser.cookies) as reader:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                found = reader.get(f"/api/conversations/{made['id']}").json()
                replies = [m for m in found["messages"] if m["role"] == "assistant"]
                if replies and replies[0]["content"] and replies[0]["status"] == "streaming":
                    break
                time.sleep(0.1)  # a poll's interval, not a guess at how long the wait is
            else:
                pytest.fail("no checkpoint of the reply within 30 s")
        assert service.process is not None
        service.process.kill()
        service.process.wait(10)
        cookies = dict(browser.cookies)
    with Service(fake.url, **env) as again:
        found = httpx.get(
            again.url + f"/api/conversations/{made['id']}", cookies=cookies, timeout=10
        ).json()
    reply = next(m for m in found["messages"] if m["role"] == "assistant")
    assert reply["status"] == "interrupted"
    assert reply["content"].startswith("word0 word1 ")
    assert found["leaf_id"] == reply["id"]


def _turn_left_running(service: Service, browser: httpx.Client) -> tuple[str, str]:
    """Send a message, read up to its first chunk, and hang up: the run goes on with no reader.
    The conversation's and the reply's ids."""
    made = browser.post("/api/conversations", json={}).json()
    body = {"content": "a long answer", "client_id": "c-1"}
    with browser.stream("POST", f"/api/conversations/{made['id']}/messages", json=body) as r:
        reply_id = r.headers["Quartchat-Reply-Id"]
        raw = b""
        for piece in r.iter_raw():
            raw += piece
            if b"event: chunk" in raw:
                break
    return made["id"], reply_id


def _reply_after_restart(
    fake: FakeUpstream, env: dict[str, str], cookies: dict[str, str], conversation_id: str
) -> dict[str, object]:
    with Service(fake.url, **env) as again:
        found = httpx.get(
            again.url + f"/api/conversations/{conversation_id}", cookies=cookies, timeout=10
        ).json()
    reply: dict[str, object] = next(m for m in found["messages"] if m["role"] == "assistant")
    return reply


@pytest.mark.parametrize(
    ("words", "grace", "status"),
    [(200, "1", "interrupted"), (12, "20", "complete")],
    ids=["past-the-grace", "within-the-grace"],
)
def test_sigterm_gives_a_run_nobody_reads_the_grace_period_then_saves_it(
    fake: FakeUpstream, tmp_path: Path, words: int, grace: str, status: str
) -> None:
    env = {
        "AUTH_MODE": "accounts",
        "DATA_DIR": str(tmp_path),
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
        "SHUTDOWN_GRACE_SECONDS": grace,
    }
    text = "".join(f"w{i} " for i in range(words))
    fake.reply_with(Reply(chunks=completion_chunks([f"w{i} " for i in range(words)]), delay=0.05))
    with Service(fake.url, **env) as service, httpx.Client(base_url=service.url) as browser:
        assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
        conversation_id, _ = _turn_left_running(service, browser)
        assert service.process is not None
        service.process.terminate()  # SIGTERM
        assert service.process.wait(30) == 0
        cookies = dict(browser.cookies)
    reply = _reply_after_restart(fake, env, cookies, conversation_id)
    assert reply["status"] == status
    content = str(reply["content"])
    assert content.startswith("w0 ") and text.startswith(content)
    if status == "complete":
        assert content == text
    else:
        assert len(content) < len(text)

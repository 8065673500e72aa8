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

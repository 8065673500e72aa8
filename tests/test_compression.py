"""Text responses are gzipped for clients that accept it; streams never are."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from quartchat.compression import accepts_gzip

from .conftest import CHAT, LiveClient
from .fake_upstream import FakeUpstream, Reply, completion_chunks

GZIP = {"Accept-Encoding": "gzip, deflate, br"}


async def raw(response: Any) -> bytes:
    data = await response.get_data()
    assert isinstance(data, bytes)
    return data


async def test_the_page_is_gzipped_for_a_client_that_accepts_it(client: Client) -> None:
    plain = await client.get("/")
    packed = await client.get("/", headers=GZIP)
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"]
    body = await raw(packed)
    assert gzip.decompress(body) == await raw(plain)
    assert len(body) < len(await raw(plain)) / 2


async def test_a_static_script_is_gzipped_and_still_revalidates_to_304(client: Client) -> None:
    path = "/static/vendor/marked/marked.esm.js"
    first = await client.get(path, headers=GZIP)
    assert first.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await raw(first)) == await raw(await client.get(path))
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')  # not the identity bytes: a weak validator
    again = await client.get(path, headers={**GZIP, "If-None-Match": etag})
    assert again.status_code == 304


@pytest.mark.parametrize("header", ["", "identity", "gzip;q=0", "br"])
async def test_no_gzip_for_a_client_that_does_not_take_it(client: Client, header: str) -> None:
    response = await client.get("/", headers={"Accept-Encoding": header})
    assert "Content-Encoding" not in response.headers
    assert (await raw(response)).startswith(b"<!doctype html>")


async def test_a_small_json_answer_is_sent_as_it_is(client: Client) -> None:
    response = await client.get("/health", headers=GZIP)
    assert "Content-Encoding" not in response.headers


async def test_a_streamed_reply_is_never_compressed(live: LiveClient, fake: FakeUpstream) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["word "] * 400)))
    async with live() as client:
        response = await client.post("/api/chat/stream", json=CHAT, headers=GZIP)
        body = await raw(response)
    assert "Content-Encoding" not in response.headers
    assert body.startswith(b"event: chunk")


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("GZIP;q=0.5", True),
        ("*", True),
        ("deflate, gzip;q=0", False),
        ("br", False),
    ],
)
def test_accept_encoding_is_read_with_its_weights(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


async def test_a_small_json_answer_does_not_say_it_varies_by_what_the_client_accepts(
    client: Client,
) -> None:
    # The same bytes go to every client: no cache needs to keep one copy per Accept-Encoding.
    response = await client.get("/health", headers=GZIP)
    assert "Accept-Encoding" not in response.headers.get("Vary", "")

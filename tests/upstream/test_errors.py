"""What the user reads when the upstream fails: the human part of whatever error body it sends
(cut to length), or its status when there is no body to read."""

from __future__ import annotations

import pytest
from quart.typing import TestClientProtocol as Client

from quartchat.errors import Redactor
from quartchat.upstream.client import message_of

from ..conftest import CHAT, LiveClient, assert_error
from ..fake_upstream import FakeUpstream, Reply

DIALECTS = {
    "OpenAI": b'{"error": {"message": "Rate limit reached", "type": "requests"}}',
    "an error object with detail": b'{"error": {"detail": "Rate limit reached"}}',
    "an error object with msg": b'{"error": {"msg": "Rate limit reached"}}',
    "a flat message": b'{"message": "Rate limit reached", "code": 429}',
    "an error string": b'{"error": "Rate limit reached"}',
    "FastAPI": b'{"detail": "Rate limit reached"}',
    "detail beside an unhelpful error": b'{"error": true, "detail": "Rate limit reached"}',
    "plain text": b"  Rate limit reached\n",
    "an HTML page": b"<html><head><title>Rate limit reached</title></head><body>x</body></html>",
    "an HTML page without a title": b"<html><body><h1>Rate limit\n reached</h1></body></html>",
}


@pytest.mark.parametrize("body", DIALECTS.values(), ids=DIALECTS.keys())
def test_the_message_is_found_in_every_dialect_of_error_body(body: bytes) -> None:
    assert message_of(body) == "Rate limit reached"


@pytest.mark.parametrize(
    "body",
    [b'["no", "such", "model"]', b'{"code": 7, "detail": [{"loc": ["model"]}]}'],
)
def test_json_of_an_unknown_shape_is_passed_on_as_its_text(body: bytes) -> None:
    assert message_of(b"\n" + body + b"\n") == body.decode()


def test_a_body_that_is_not_utf_8_is_still_read() -> None:
    page = "<html><head><title>Überlastet</title></head></html>".encode("latin-1")
    assert message_of(page) == "\ufffdberlastet"


def test_text_with_angle_brackets_that_is_not_html_is_kept_whole() -> None:
    assert (
        message_of(b"Expected List<Message> at <messages>")
        == "Expected List<Message> at <messages>"
    )


def test_upstream_text_up_to_the_limit_is_kept_whole_and_longer_text_is_cut_to_it() -> None:
    redact = Redactor()
    assert redact("x" * 500) == "x" * 500
    assert redact("x" * 501) == "x" * 499 + "…"
    assert redact("x" * 40, limit=30) == "x" * 29 + "…"


async def test_an_error_status_whose_body_is_cut_off_is_reported_by_its_status(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(status=500, chunks=[b'{"error": {"mess'], cut=True))
    response = await live_client.post("/api/chat/stream", json=CHAT)
    error = assert_error(response.status_code, await response.get_data(), 502, "UPSTREAM_ERROR")
    assert error["message"] == "The upstream failed (500): Internal Server Error"


async def test_a_rate_limit_s_retry_after_is_passed_on_over_the_production_transport(
    live_client: Client, fake: FakeUpstream
) -> None:
    headers = {"Content-Type": "application/json", "Retry-After": "17"}
    fake.reply_with(
        Reply(status=429, chunks=[b'{"error": {"message": "slow down"}}'], headers=headers)
    )
    response = await live_client.post("/api/chat/stream", json=CHAT)
    error = assert_error(
        response.status_code, await response.get_data(), 429, "UPSTREAM_RATE_LIMITED"
    )
    assert response.headers["Retry-After"] == "17"
    assert error["message"] == "The upstream is rate limiting: slow down"


# An Azure-style key: 32 hex digits, which no credential shape matches, so only the configured
# key's own redaction can remove it.
AZURE_KEY = "3f9a0c7e5b2d4a6f8e1c0b9d7a5f3e21"


def percent_encoded(text: str) -> str:
    return "".join(f"%{ord(c):02X}" for c in text)


ECHOES = {
    "as it is": AZURE_KEY,
    "upper-cased": AZURE_KEY.upper(),
    "percent-encoded": percent_encoded(AZURE_KEY),
    "percent-encoded in lower-case hex": percent_encoded(AZURE_KEY).lower(),
    "partly percent-encoded": AZURE_KEY[:10] + percent_encoded(AZURE_KEY[10:20]) + AZURE_KEY[20:],
    "upper-cased and percent-encoded": percent_encoded(AZURE_KEY.upper()),
    "cut to its first 8 characters": AZURE_KEY[:8],
    "cut short and upper-cased": AZURE_KEY[:20].upper(),
}


@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
def test_the_configured_key_is_redacted_in_any_case_percent_encoded_or_cut_short(
    echo: str,
) -> None:
    redacted = Redactor(AZURE_KEY)(f"Access denied for key '{echo}' at /v1/keys/{echo}?x=1")
    assert redacted == "Access denied for key '[redacted]' at /v1/keys/[redacted]?x=1"


def test_fewer_than_8_characters_of_the_key_are_not_taken_for_it() -> None:
    text = f"request {AZURE_KEY[:7]} failed"
    assert Redactor(AZURE_KEY)(text) == text


async def test_an_upstream_echoing_the_key_encoded_sends_the_client_no_form_of_it(
    live: LiveClient, fake: FakeUpstream
) -> None:
    echo = f"No deployment at /keys/{percent_encoded(AZURE_KEY)} for {AZURE_KEY.upper()}"
    body = b'{"error": {"message": "' + echo.encode() + b'"}}'
    fake.reply_with(Reply(status=404, chunks=[body]))
    async with live(openai_api_key=AZURE_KEY) as client:
        response = await client.post("/api/chat/stream", json=CHAT)
    error = assert_error(response.status_code, await response.get_data(), 400, "UPSTREAM_REJECTED")
    assert error["message"] == "No deployment at /keys/[redacted] for [redacted]"

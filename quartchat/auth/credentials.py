"""Random credentials and their stored form.

A session cookie, an API token, an invite link and the setup token each carry 32 random bytes;
the database keeps only their SHA-256 (a random 256-bit secret needs no slow hash, and equality
lookup stays one index probe), so a copy of the database lets nobody in.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "qc_"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_prefix(token: str) -> str:
    """What a list shows of a token: enough to recognise it, far too little to use it."""
    return token[: len(TOKEN_PREFIX) + 6]

"""Open streams whose credential no longer holds are ended, whichever process revoked it.

A logout, a revoked token or a disabled user ends that user's streams at once in the process
that made the change (the routes call `LiveStreams.end_user`). Other worker processes and hosts
learn of it here: while any stream with a holder is open, once a second, the distinct
credentials of the open streams are checked against the database -- one query per kind of
credential, however many streams -- and the streams of those that no longer hold are ended with
`CREDENTIAL_REVOKED`.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import Database
from ..db.tables import api_tokens, now, sessions, users
from ..errors import error_kind
from ..streaming.watch import Holder, LiveStreams

log = logging.getLogger("quartchat")

CHECK_SECONDS = 1.0


async def still_valid(connection: AsyncConnection, holders: set[Holder]) -> set[Holder]:
    """Those of `holders` whose credential still holds: a live session, a token neither revoked
    nor expired, and for every kind, a user who is active."""
    by_kind: dict[str, set[Holder]] = {}
    for holder in holders:
        by_kind.setdefault(holder.via, set()).add(holder)
    valid: set[tuple[int, str]] = set()
    if "session" in by_kind:
        ids = {h.credential for h in by_kind["session"]}
        query = (
            select(sessions.c.user_id, sessions.c.id)
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.id.in_(ids), sessions.c.expires_at > now())
            .where(users.c.status == "active")
        )
        valid |= {(row[0], row[1]) for row in await connection.execute(query)}
    if "token" in by_kind:
        token_ids = {int(h.credential) for h in by_kind["token"] if h.credential.isdigit()}
        query = (
            select(api_tokens.c.user_id, api_tokens.c.id)
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.id.in_(token_ids), api_tokens.c.revoked_at.is_(None))
            .where(or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > now()))
            .where(users.c.status == "active")
        )
        valid |= {(row[0], str(row[1])) for row in await connection.execute(query)}
    if "header" in by_kind:
        user_ids = {h.user_id for h in by_kind["header"]}
        query = select(users.c.id, users.c.email).where(
            users.c.id.in_(user_ids), users.c.status == "active"
        )
        valid |= {(row[0], row[1]) for row in await connection.execute(query)}
    return {h for h in holders if (h.user_id, h.credential) in valid}


async def end_revoked(db: Database, streams: LiveStreams) -> int:
    """One check: end the open streams whose credential no longer holds; how many were ended."""
    holders = streams.holders()
    if not holders:
        return 0
    async with db.read() as connection:
        valid = await still_valid(connection, holders)
    return streams.end_held(holders - valid)


async def watch_credentials(db: Database, streams: LiveStreams) -> None:
    """Run `end_revoked` every CHECK_SECONDS while held streams are open (a task for the app's
    lifetime)."""
    while True:
        await streams.holding.wait()
        await asyncio.sleep(CHECK_SECONDS)
        try:
            await end_revoked(db, streams)
        except Exception as exc:  # the database is away: the streams run on, the next round retries
            log.warning("credential check failed: %s", error_kind(exc))

"""Alembic's environment: always run by quartchat.db.migrate on a connection it opened."""

from __future__ import annotations

from alembic import context

from quartchat.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the alembic command line is not how we migrate
    raise RuntimeError("run migrations with `quartchat migrate` (quartchat.db.migrate)")

SEARCH_OBJECTS = ("messages_fts", "ix_messages_search", "search_vector")


def include_object(
    obj: object, name: str | None, kind: str, reflected: bool, compare_to: object
) -> bool:
    """Leave the search structures (made per database in migrations 0002-0004) out of comparisons."""
    return not (name or "").startswith(SEARCH_OBJECTS)


context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite alters a table by copying it; batch mode does that
    compare_type=True,
    include_object=include_object,
)
with context.begin_transaction():
    context.run_migrations()

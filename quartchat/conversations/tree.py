"""A conversation's messages form a tree (`parent_id`): regenerating a reply or editing a
question adds a sibling, and the conversation's `leaf_id` picks the path shown. The walks over
that tree, on messages already read (store.messages_of).
"""

from __future__ import annotations

from .rows import Message


def path_to(tree: list[Message], leaf_id: str | None) -> list[Message]:
    """The messages from the root down to `leaf_id`: what the page shows, and the context sent."""
    by_id = {m.id: m for m in tree}
    path: list[Message] = []
    seen: set[str] = set()
    node = by_id.get(leaf_id) if leaf_id else None
    while node is not None and node.id not in seen:
        seen.add(node.id)
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id else None
    path.reverse()
    return path

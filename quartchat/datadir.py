"""DATA_DIR is the service's alone: the directory 0700, every file in it 0600.

It holds the SQLite database (messages, password hashes), its backups and the key that signs
cookies. `quartchat` sets umask 077 when it starts, so what the process creates is private
anyway; these functions cover the rest: `create_app` run by another host (`hypercorn
"quartchat:create_app()"`, a test) and a directory an older version made (0755, files 0644),
which they fix, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("quartchat")

OTHERS = 0o077  # the group's and everybody else's permission bits
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def make_private(directory: Path) -> None:
    """Create `directory` 0700; if it exists and others may enter it, take their permissions
    away from it and from everything in it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _mode(directory) & OTHERS:
        # Nobody else can enter it, so nobody else can open what is inside, whatever its mode.
        return
    fixed = [path for path in (directory, *_tree(directory)) if _tighten(path)]
    if fixed:
        log.warning(
            "DATA_DIR %s was open to other users: made it 0700 and %d entries in it private",
            directory,
            len(fixed) - 1,
        )


def private_database(path: Path) -> None:
    """Before SQLite opens `path`: its directory made if missing (0700), the file made 0600 if
    missing (SQLite gives its -wal, -shm and -journal files the database file's mode), and the
    file and those companions made private if they were not, with a warning."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    create_private(path)
    companions = (path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)
    fixed = [str(p) for p in (path, *companions) if p.exists() and _tighten(p)]
    if fixed:
        log.warning("the database's files were readable by other users, now 0600: %s", fixed)


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists (an empty file is a new SQLite
    database, and an empty target is what `VACUUM INTO` accepts)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _tree(directory: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(directory):  # symbolic links are not followed
        for name in (*dirs, *files):
            yield Path(root, name)


def _tighten(path: Path) -> bool:
    """Take the group's and others' permissions off `path`; True if there were any."""
    mode = _mode(path)
    if not mode & OTHERS or stat.S_ISLNK(os.lstat(path).st_mode):
        return False
    try:
        os.chmod(path, mode & ~OTHERS)
    except PermissionError:  # not ours (a mount's root): say so, and serve anyway
        log.warning("could not make %s private (it belongs to another user)", path)
        return False
    return True


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)

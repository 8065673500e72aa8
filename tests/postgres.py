"""A throwaway PostgreSQL server for the tests: Debian's `postgresql`, started on a free port.

`initdb` runs as the `postgres` user when the tests run as root (PostgreSQL refuses root), with
`fsync=off` and friends: the cluster lives for one test session in a temporary directory.
`TEST_DATABASE_URL` (a `postgresql+asyncpg://` URL of a server where the user may create
databases) is used instead when set.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from .service import free_port


def postgres_bin() -> Path | None:
    """Where Debian's (or the PATH's) initdb and pg_ctl are."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="quartchat-pg-"))
        self.data = self.dir / "data"
        self.user: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> URL:
        return make_url(f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres")

    def _run(self, *argv: str) -> None:
        command = [*(("runuser", "-u", self.user, "--") if self.user else ()), *argv]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> Cluster:
        if self.user:
            record = pwd.getpwnam(self.user)
            os.chown(self.dir, record.pw_uid, record.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def server_url() -> tuple[URL | None, Cluster | None, str]:
    """The URL of a server to create test databases on, the cluster started for it (to stop),
    or why there is none."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        return make_url(configured), None, ""
    bin_dir = postgres_bin()
    if bin_dir is None:
        return None, None, "no PostgreSQL (apt-get install postgresql, or set TEST_DATABASE_URL)"
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
    except (subprocess.SubprocessError, OSError, KeyError) as exc:
        cluster.stop()
        detail = getattr(exc, "stderr", b"") or b""
        return None, None, f"PostgreSQL did not start: {exc} {detail.decode()[-500:]}"
    return cluster.url, cluster, ""

"""A throwaway PostgreSQL cluster for tests and benchmarks: a temporary folder, a Unix socket.

Debian keeps the server programs (`initdb`, `pg_ctl`) off PATH in its versioned folder. Both
refuse to run as root, so as root they run as the `postgres` user. No TCP port is opened and no
system service is touched: the cluster lives and dies with the folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from schemewatch.errors import DatabaseError

_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/pgsql-*/bin")


def server_programs() -> Path:
    """The folder holding initdb and pg_ctl, or a DatabaseError saying how to install them."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    for pattern in _SEARCH:
        for folder in sorted(glob.glob(pattern), reverse=True):
            if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
                return Path(folder)
    raise DatabaseError(
        "PostgreSQL server programs (initdb, pg_ctl) not found; "
        "install them with `apt-get install postgresql`"
    )


class ThrowawayCluster:
    """initdb + pg_ctl start in a temporary folder; `url(name)` for each database made in it."""

    def __init__(self, base: Path | None = None):
        self.bin = server_programs()
        self.root = Path(tempfile.mkdtemp(prefix="schemewatch-pg-", dir=base))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.as_root = os.geteuid() == 0
        self.started = False

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise DatabaseError(f"{args[0]} failed: {' / '.join(tail)}")

    def start(self) -> ThrowawayCluster:
        self.socket_dir.mkdir(parents=True)
        if self.as_root:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        options = (
            f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            "-c shared_buffers=256MB"
        )
        log = self.root / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start")
        self.started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new database, empty or a copy of `template` (a database nobody is connected to)."""
        import psycopg

        name = name or f"sw_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, closing any connection a test left open to it."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

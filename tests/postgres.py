"""A private PostgreSQL cluster for the tests: Debian's server binaries (`make test` installs the
`postgresql` package), a data directory in a temporary folder, a Unix socket and no TCP port.

As root (here and in CI) the server runs as the `postgres` user, which initdb requires.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "postgres"
PORT = 5432
"""Names the socket file (`.s.PGSQL.5432`) in the cluster's own directory; no TCP port is opened."""


def server_binaries() -> Path:
    """The newest installed PostgreSQL's bin folder."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL server in /usr/lib/postgresql: install Debian's postgresql (make test does)")
    return found[-1].parent


class PostgresCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="imagegen-pg-"))
        self._bin = server_binaries()
        self._as_server_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_server_user = ["runuser", "-u", SERVER_USER, "--"]
        self._databases = itertools.count()

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> None:
        self._run(
            "initdb",
            "--no-sync",
            "--auth=trust",
            f"--username={SERVER_USER}",
            "--no-locale",
            "-E",
            "UTF8",
            "-D",
            self.data,
        )
        # Durability off: the cluster lives as long as the test session.
        options = f"-k {self.root} -c listen_addresses= -p {PORT} -c fsync=off -c synchronous_commit=off"
        self._run("pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server if it runs, and remove the cluster's folder whatever happened."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@/{database}?host={self.root}&port={PORT}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        import psycopg

        name = f"test_{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _run(self, program: str, *args: str | Path) -> None:
        command = [*self._as_server_user, str(self._bin / program), *map(str, args)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if done.returncode:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr or done.stdout}")

"""The embedded default store: one SQLite file, used from one thread off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from frontend.store.database import Database
from frontend.store.schema import Transaction

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0
"""How long a writer waits for another process's write lock (the CLI while the server runs)."""
COMPANION_SUFFIXES = ("", "-wal", "-shm", "-journal")
"""The database file and those SQLite keeps beside it, all holding the store's rows."""


class _SqliteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._connection.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._connection.execute(sql, params).rowcount


class SqliteDatabase(Database):
    """A connection owned by a single worker thread: statements never block the event loop, and
    the transactions of concurrent requests run one after the other as SQLite requires."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _owner_only(path)
        self.path = path
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._connection = self._worker.submit(_connect, path).result()

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        """The database at `path`, created or migrated to the latest schema."""
        database = cls(path)
        await database.migrate()
        return database

    async def transact(self, work: Callable[[Transaction], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._run, work)

    def _run(self, work: Callable[[Transaction], T]) -> T:
        # BEGIN IMMEDIATE takes the write lock up front, so a transaction that reads then writes
        # (a migration) cannot interleave with another process's.
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(_SqliteTransaction(self._connection))
        except sqlite3.IntegrityError as exc:
            self._connection.rollback()
            raise ValueError(f"refused by the store: {exc}") from None  # e.g. a username taken
        except BaseException:
            self._connection.rollback()
            raise
        self._connection.commit()
        return result

    def close(self) -> None:
        self._worker.submit(self._connection.close).result()
        self._worker.shutdown()


def _owner_only(path: Path) -> None:
    """Create the database file readable and writable by its owner only (0600), or make an existing
    one and its companions so: they hold the hashes of keys, passwords and sessions. SQLite gives the
    -wal and -shm files it creates later the database file's mode."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for suffix in COMPANION_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).chmod(0o600)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are exactly the BEGIN/COMMIT issued in `_run`.
    connection = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    _enable_wal(connection)
    connection.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; a power cut may lose the last rows
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def _enable_wal(connection: sqlite3.Connection) -> None:
    """WAL, so readers (the CLI) do not block the server's writes. Switching a new file to WAL needs
    its lock and SQLite does not wait for it (no busy handler there): processes opening one new
    file together retry for up to BUSY_TIMEOUT_S."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)

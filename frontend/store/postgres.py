"""The shared store: one PostgreSQL database that several frontend replicas use as one service.

Threads, as sqlite.py: `transact` runs a synchronous function over a pooled connection on a worker
thread. An asyncio pool would bind the store to one event loop, and `imagegen serve` opens the store
(migrations, the operator's key) before uvicorn starts the loop that serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from frontend.store.database import Database
from frontend.store.schema import Transaction, migrate

T = TypeVar("T")

POOL_SIZE = 4
"""Connections (and worker threads) per frontend process: a request's transactions last about a
millisecond, and replicas x POOL_SIZE stays far below PostgreSQL's default 100 connections."""
CONNECT_TIMEOUT_S = 10.0
MIGRATION_LOCK = 0x696D6167
"""`pg_advisory_xact_lock` key serialising migrations: replicas starting together apply each once."""


class _PostgresTransaction:
    def __init__(self, cursor: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self._cursor = cursor

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._cursor.execute(_placeholders(sql), params).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._cursor.execute(_placeholders(sql), params).rowcount


class PostgresDatabase(Database):
    """Transactions run at READ COMMITTED on pooled connections, concurrently: where a read decides a
    write (migrations, rate limits) the transaction takes a lock first, as limits.py documents."""

    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        self._workers = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="postgres-store")
        self._pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=POOL_SIZE, open=True, name="store")
        try:
            self._pool.wait(CONNECT_TIMEOUT_S)
        except psycopg_pool.PoolTimeout:
            self.close()
            raise ValueError(f"cannot connect to the PostgreSQL store within {CONNECT_TIMEOUT_S:.0f} s") from None

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        """The database at `url`, migrated to the latest schema."""
        database = cls(url)
        try:
            await database.migrate()
        except BaseException:
            database.close()
            raise
        return database

    async def migrate(self) -> list[int]:
        def work(tx: Transaction) -> list[int]:
            tx.fetchall("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            return migrate(tx, time.time())

        return await self.transact(work)

    async def transact(self, work: Callable[[Transaction], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._workers, self._run, work)

    def _run(self, work: Callable[[Transaction], T]) -> T:
        try:
            with self._pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
                return work(_PostgresTransaction(cursor))
        except psycopg.errors.IntegrityError as exc:
            raise ValueError(f"refused by the store: {exc.diag.message_primary}") from None  # e.g. a username taken

    def close(self) -> None:
        self._pool.close()
        self._workers.shutdown()


def _placeholders(sql: str) -> str:
    """The repositories' `?` placeholders as psycopg's `%s` (a literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")

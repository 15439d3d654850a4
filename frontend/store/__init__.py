"""Persistent state: plans and prices, API keys, accounts and browser sessions, the usage ledger,
rate-limit counts.

`Store` (repository.py) holds every query in plain SQL; `SqliteStore` (sqlite.py) is the embedded
default, `PostgresStore` (postgres.py) the database that replicas share.
"""

from __future__ import annotations

from pathlib import Path

from frontend.store.repository import Store
from frontend.store.sqlite import SqliteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


async def connect(location: str) -> Store:
    """The store at `location`, migrated: a `postgresql://` URL, else a SQLite file's path."""
    if location.startswith(POSTGRES_SCHEMES):
        try:
            from frontend.store.postgres import PostgresStore
        except ModuleNotFoundError as exc:
            raise ValueError(f"a PostgreSQL store needs the `postgres` extra ({exc.name} is missing)") from None
        return await PostgresStore.open(location)
    return await SqliteStore.open(Path(location))

"""The one primitive every query runs through, and the repository each concern's queries share.

A dialect (sqlite.py, postgres.py) supplies `transact`: run a function over a `Transaction` in one
database transaction, off the event loop. The queries, in SQL that SQLite and PostgreSQL both
accept, live in one repository per concern (plans.py, keys.py, ...); the PostgreSQL dialect is that
primitive, a placeholder translation and a lock around migrations.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

from frontend.store.schema import Transaction, migrate

T = TypeVar("T")


class Database(ABC):
    """A dialect: transactions and the connection's lifetime."""

    skip_locked = ""
    """Ends a SELECT whose rows the transaction then claims (store/jobs.py): PostgreSQL's
    ` FOR UPDATE SKIP LOCKED`; nothing on SQLite, whose write lock covers the whole transaction."""

    @abstractmethod
    async def transact(self, work: Callable[[Transaction], T]) -> T:
        """Run `work` in one transaction, committing unless it raises. SQLite holds its write lock
        throughout; PostgreSQL runs at READ COMMITTED, so work whose reads decide its writes locks a
        row first (`RateLimits.admit`)."""

    @abstractmethod
    def close(self) -> None: ...

    async def migrate(self) -> list[int]:
        """Bring the schema to the latest version; the versions applied."""
        return await self.transact(lambda tx: migrate(tx, time.time()))


class Repository:
    """The queries of one concern, each run in a transaction of the database the store shares."""

    def __init__(self, database: Database) -> None:
        self._transact = database.transact


def words(values: frozenset[str]) -> str:
    """Scopes and benefits are stored as one space-separated column, as OAuth writes scopes."""
    return " ".join(sorted(values))

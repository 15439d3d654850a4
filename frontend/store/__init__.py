"""Persistent state: plans and prices, API keys, accounts and browser sessions, rate-limit counts,
the usage ledger, LoRA adapters, the routing table, the frontends' heartbeats, asynchronous jobs and
their webhooks.

`Store` holds one repository per concern (plans.py, keys.py, ...: each its records and their
queries, in plain SQL) over one `Database` (database.py), the dialect: `SqliteDatabase` (sqlite.py)
is the embedded default, `PostgresDatabase` (postgres.py) the database that replicas share.
"""

from __future__ import annotations

from pathlib import Path

from frontend.store.accounts import Accounts
from frontend.store.adapters import LoraAdapters
from frontend.store.database import Database
from frontend.store.heartbeats import Heartbeats
from frontend.store.jobs import Jobs
from frontend.store.keys import Keys
from frontend.store.ledger import Ledger
from frontend.store.limits import RateLimits
from frontend.store.plans import Plans
from frontend.store.routes import Routes
from frontend.store.sessions import Sessions
from frontend.store.sqlite import SqliteDatabase
from frontend.store.webhooks import WebhookDeliveries, WebhookSecrets

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Store:
    """Every query the application makes, by concern: `store.keys.add(key)`, `store.ledger.record(row)`."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.plans = Plans(database)
        self.keys = Keys(database)
        self.accounts = Accounts(database)
        self.sessions = Sessions(database)
        self.limits = RateLimits(database)
        self.ledger = Ledger(database)
        self.adapters = LoraAdapters(database)
        self.routes = Routes(database)
        self.heartbeats = Heartbeats(database)
        self.jobs = Jobs(database)
        self.webhook_secrets = WebhookSecrets(database)
        self.webhook_deliveries = WebhookDeliveries(database)

    def close(self) -> None:
        self.database.close()


async def connect(location: str) -> Store:
    """The store at `location`, migrated: a `postgresql://` URL, else a SQLite file's path."""
    if location.startswith(POSTGRES_SCHEMES):
        try:
            from frontend.store.postgres import PostgresDatabase
        except ModuleNotFoundError as exc:
            raise ValueError(f"a PostgreSQL store needs the `postgres` extra ({exc.name} is missing)") from None
        return Store(await PostgresDatabase.open(location))
    return Store(await SqliteDatabase.open(Path(location)))

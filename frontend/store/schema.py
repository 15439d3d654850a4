"""The store's schema as numbered migrations, applied in order when a store opens.

The SQL is what SQLite and PostgreSQL both accept (TEXT, INTEGER, BIGINT, DOUBLE PRECISION,
`ON CONFLICT`), so replicas can later share one PostgreSQL with these same migrations. Times are
Unix seconds; ids are made by the application, never by the database (no dialect's autoincrement).
A released migration is never edited: a change is a new entry appended to MIGRATIONS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Transaction(Protocol):
    """What a store's dialect provides: statements with `?` placeholders inside one transaction."""

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: plans and their prices, API keys, accounts and browser sessions, the usage ledger.
    (
        """CREATE TABLE plans (
            name TEXT PRIMARY KEY,
            benefits TEXT NOT NULL,
            requests_per_minute INTEGER,
            concurrent_generations INTEGER
        )""",
        """CREATE TABLE prices (
            plan TEXT NOT NULL REFERENCES plans (name),
            model TEXT NOT NULL,
            per_image DOUBLE PRECISION NOT NULL,
            per_megapixel_step DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (plan, model)
        )""",
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            scopes TEXT NOT NULL,
            plan TEXT NOT NULL REFERENCES plans (name),
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
        "CREATE INDEX api_keys_prefix ON api_keys (prefix)",
        """CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            username TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            plan TEXT NOT NULL REFERENCES plans (name),
            created_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts (id),
            expires_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE usage_ledger (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            model TEXT,
            n INTEGER,
            width INTEGER,
            height INTEGER,
            steps INTEGER,
            energy_kwh DOUBLE PRECISION NOT NULL,
            credits DOUBLE PRECISION NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            status INTEGER NOT NULL,
            code TEXT
        )""",
        "CREATE INDEX usage_ledger_principal ON usage_ledger (principal, created_at)",
        "INSERT INTO plans (name, benefits) VALUES ('free', ''), ('studio', 'studio_access')",
        # About one credit for a 1024x1024 image at FLUX.1-schnell's 4 steps.
        "INSERT INTO prices (plan, model, per_image, per_megapixel_step) VALUES ('studio', '*', 0.0, 0.25)",
    ),
    # Model rollouts: the routing table every frontend follows, and each frontend's heartbeat of what
    # it serves (frontend/routing.py).
    (
        """CREATE TABLE model_routes (
            model TEXT PRIMARY KEY,
            stable_version INTEGER NOT NULL,
            previous_version INTEGER,
            canary_version INTEGER,
            canary_percent DOUBLE PRECISION NOT NULL,
            generation BIGINT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE frontend_heartbeats (
            frontend TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            serving TEXT NOT NULL,
            in_flight TEXT NOT NULL,
            seen_at DOUBLE PRECISION NOT NULL
        )""",
        # The operator's key has every scope, admin.models (new here) included.
        "UPDATE api_keys SET scopes = scopes || ' admin.models' WHERE name = 'operator'",
    ),
    # LoRA adapters (`imagegen lora`, frontend/adapters.py); the file lies under the state dir by content hash.
    (
        """CREATE TABLE lora_adapters (
            name TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            rank INTEGER NOT NULL,
            layers INTEGER NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
    ),
    # Rate limits shared by every frontend (frontend/rate_limits.py): a row per principal to lock,
    # and a row per admitted request, which holds a generation lease while it runs.
    (
        """CREATE TABLE rate_limit_principals (
            principal TEXT PRIMARY KEY,
            last_request_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE rate_limit_admissions (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            admitted_at DOUBLE PRECISION NOT NULL,
            lease_until DOUBLE PRECISION
        )""",
        "CREATE INDEX rate_limit_admissions_principal ON rate_limit_admissions (principal, admitted_at)",
    ),
    # Security hardening (issue 16): accounts can be disabled; admission rows are swept once their window
    # has passed, by one frontend at a time (`store_chores` holds when each periodic chore last ran).
    (
        "ALTER TABLE accounts ADD COLUMN disabled_at DOUBLE PRECISION",
        "CREATE INDEX rate_limit_admissions_admitted ON rate_limit_admissions (admitted_at)",
        "CREATE INDEX rate_limit_principals_seen ON rate_limit_principals (last_request_at)",
        """CREATE TABLE store_chores (
            name TEXT PRIMARY KEY,
            done_at DOUBLE PRECISION NOT NULL
        )""",
        "INSERT INTO store_chores (name, done_at) VALUES ('forget_admissions', 0)",
    ),
    # Asynchronous jobs (issue 21, frontend/jobs.py): the queue every frontend's workers claim from, a
    # claimed job's lease, its sealed request and result; a plan's discount on `:batch` jobs.
    (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            model TEXT NOT NULL,
            pipeline TEXT NOT NULL,
            priority INTEGER NOT NULL,
            status TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION,
            ended_at DOUBLE PRECISION,
            attempts INTEGER NOT NULL,
            claim TEXT,
            lease_until DOUBLE PRECISION,
            cancel_requested INTEGER NOT NULL,
            step INTEGER NOT NULL,
            steps INTEGER NOT NULL,
            request TEXT,
            result TEXT,
            result_expires_at DOUBLE PRECISION,
            error TEXT
        )""",
        "CREATE INDEX jobs_queue ON jobs (status, priority, created_at)",
        "CREATE INDEX jobs_principal ON jobs (principal, id)",
        "ALTER TABLE plans ADD COLUMN batch_discount DOUBLE PRECISION NOT NULL DEFAULT 0",
        "INSERT INTO store_chores (name, done_at) VALUES ('sweep_jobs', 0)",
    ),
    # Webhooks (issue 21, frontend/webhooks.py): each key's or account's signing secret, sealed; each
    # delivery (its sealed target and body until it ends, a lease while a frontend sends it) and
    # every attempt at it.
    (
        """CREATE TABLE webhook_secrets (
            principal TEXT PRIMARY KEY,
            secret TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE webhook_deliveries (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            job_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            host TEXT NOT NULL,
            message TEXT,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            due_at DOUBLE PRECISION,
            claim TEXT,
            ended_at DOUBLE PRECISION
        )""",
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, due_at)",
        "CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id)",
        """CREATE TABLE webhook_attempts (
            delivery_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            duration_ms DOUBLE PRECISION NOT NULL,
            response_status INTEGER,
            error TEXT,
            PRIMARY KEY (delivery_id, attempt)
        )""",
    ),
)

LATEST = len(MIGRATIONS)


def migrate(tx: Transaction, now: float) -> list[int]:
    """Apply the migrations `tx`'s database lacks; the versions applied.

    The caller holds the database's write lock for the whole transaction, so replicas starting
    together apply each migration once.
    """
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
    )
    applied = {version for (version,) in tx.fetchall("SELECT version FROM schema_migrations")}
    if applied - set(range(1, LATEST + 1)):
        raise ValueError(f"the store has schema version {max(applied)}, newer than this code's {LATEST}")
    pending = [version for version in range(1, LATEST + 1) if version not in applied]
    for version in pending:
        for statement in MIGRATIONS[version - 1]:
            tx.execute(statement)
        tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, now))
    return pending

"""The store's records and every query on them, in SQL that SQLite and PostgreSQL both accept.

A dialect (sqlite.py, postgres.py) supplies one primitive, `_transact`: run a function over a
`Transaction` in one database transaction, off the event loop. Everything else is shared: the
PostgreSQL store is that primitive, a placeholder translation and a lock around migrations.
"""

from __future__ import annotations

import dataclasses
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from frontend.store.schema import Transaction, migrate

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    name: str
    benefits: frozenset[str] = frozenset()
    requests_per_minute: int | None = None
    """None: the server's default (settings)."""
    concurrent_generations: int | None = None


@dataclass(frozen=True)
class Price:
    """Credits for one image: `per_image + per_megapixel_step * megapixels * steps`."""

    per_image: float
    per_megapixel_step: float


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    """The secret's first characters, public: how an operator and the lookup identify a key."""
    secret_hash: str
    scopes: frozenset[str]
    plan: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class Account:
    """A person who signs in from a browser; like a key, it has scopes and a plan."""

    id: str
    username: str
    password_hash: str
    scopes: frozenset[str]
    plan: str
    created_at: float
    disabled_at: float | None = None
    """Set by `imagegen accounts disable`: no sign-in, no session."""


@dataclass(frozen=True)
class UsageRecord:
    """One ledger row: what a request cost, never what it asked for (no prompt, no image)."""

    id: str
    principal: str  # the id of the key or account that made the request
    created_at: float
    model: str | None  # None when the request failed before its model was known
    n: int | None
    width: int | None
    height: int | None
    steps: int | None
    energy_kwh: float
    credits: float
    latency_ms: float
    status: int
    code: str | None  # the error code of a failed request


@dataclass(frozen=True)
class RecentUse:
    """A principal's requests found when one more arrived, and whether it was admitted."""

    admitted: bool
    requests: int  # admitted within the rate window
    oldest: float | None  # when the window's oldest request was admitted
    running: int  # requests holding a generation lease


@dataclass(frozen=True)
class UsageSummary:
    principal: str
    name: str
    requests: int
    failed: int
    images: int  # images returned, by successful requests
    energy_kwh: float
    credits: float
    errors: dict[str, int] = field(default_factory=dict)
    """Failed requests by error code (CLIENT_4990 for clients that went away)."""


@dataclass(frozen=True)
class LoraAdapter:
    """A registered LoRA adapter (`imagegen lora add`) of one pipeline's denoiser."""

    name: str
    model: str  # the pipeline name, e.g. flux-dev
    sha256: str  # of the .safetensors file, which is kept as `<state_dir>/lora/<sha256>.safetensors`
    rank: int
    layers: int  # how many of the exported LoRA layers it adapts
    created_at: float


@dataclass(frozen=True)
class Route:
    """Which versions of a pipeline every frontend serves; `generation` grows by one per change."""

    model: str
    stable_version: int
    previous_version: int | None = None
    """What `imagegen rollback` returns to."""
    canary_version: int | None = None
    canary_percent: float = 0.0
    generation: int = 0


@dataclass(frozen=True)
class Heartbeat:
    """What one frontend serves, written every refresh: the routes it applied and its requests in flight."""

    frontend: str
    address: str
    serving: dict[str, Any]
    """Model -> the Route it follows, as a dict."""
    in_flight: dict[str, int]
    """`model@version` -> generations running on that version."""
    seen_at: float


_ROUTE_COLUMNS = "model, stable_version, previous_version, canary_version, canary_percent, generation"
_KEY_COLUMNS = "id, name, prefix, secret_hash, scopes, plan, created_at, revoked_at"
_ACCOUNT_COLUMNS = "id, username, password_hash, scopes, plan, created_at, disabled_at"
_PLAN_COLUMNS = "name, benefits, requests_per_minute, concurrent_generations"
_LORA_COLUMNS = "name, model, sha256, rank, layers, created_at"


class Store(ABC):
    """Every query the application makes; a dialect supplies `_transact` and `close`."""

    @abstractmethod
    async def _transact(self, work: Callable[[Transaction], T]) -> T:
        """Run `work` in one transaction, committing unless it raises. SQLite holds its write lock
        throughout; PostgreSQL runs at READ COMMITTED, so work whose reads decide its writes locks a
        row first (`admit`)."""

    @abstractmethod
    def close(self) -> None: ...

    async def migrate(self) -> list[int]:
        """Bring the schema to the latest version; the versions applied."""
        return await self._transact(lambda tx: migrate(tx, time.time()))

    # Plans and prices

    async def add_plan(self, plan: Plan) -> None:
        sql = f"INSERT INTO plans ({_PLAN_COLUMNS}) VALUES (?, ?, ?, ?)"
        params = (plan.name, _words(plan.benefits), plan.requests_per_minute, plan.concurrent_generations)
        await self._transact(lambda tx: tx.execute(sql, params))

    async def plan(self, name: str) -> Plan:
        rows = await self._transact(
            lambda tx: tx.fetchall(f"SELECT {_PLAN_COLUMNS} FROM plans WHERE name = ?", (name,))
        )
        if not rows:
            raise ValueError(f"there is no plan {name!r}; `imagegen plans list` shows them")
        return _plan(rows[0])

    async def plans(self) -> list[Plan]:
        rows = await self._transact(lambda tx: tx.fetchall(f"SELECT {_PLAN_COLUMNS} FROM plans ORDER BY name"))
        return [_plan(row) for row in rows]

    async def set_price(self, plan: str, model: str, price: Price) -> None:
        """The price of `model` (a pipeline name, or `*` for any model) on `plan`."""
        sql = (
            "INSERT INTO prices (plan, model, per_image, per_megapixel_step) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (plan, model) DO UPDATE SET per_image = excluded.per_image, "
            "per_megapixel_step = excluded.per_megapixel_step"
        )
        await self._transact(lambda tx: tx.execute(sql, (plan, model, price.per_image, price.per_megapixel_step)))

    async def price(self, plan: str, model: str) -> Price | None:
        """The model's own price on the plan, else the plan's `*` price, else None (free)."""
        sql = "SELECT model, per_image, per_megapixel_step FROM prices WHERE plan = ? AND model IN (?, '*')"
        rows = {m: Price(a, b) for m, a, b in await self._transact(lambda tx: tx.fetchall(sql, (plan, model)))}
        return rows.get(model) or rows.get("*")

    async def prices(self, plan: str) -> dict[str, Price]:
        sql = "SELECT model, per_image, per_megapixel_step FROM prices WHERE plan = ? ORDER BY model"
        return {m: Price(a, b) for m, a, b in await self._transact(lambda tx: tx.fetchall(sql, (plan,)))}

    # API keys

    async def add_key(self, key: ApiKey) -> bool:
        """Insert `key`; False when a key with the same secret exists already (kept as it is)."""
        return await self._transact(lambda tx: _insert_key(tx, key))

    async def replace_keys_named(self, key: ApiKey) -> list[str]:
        """Insert `key` and revoke every other active key of its name, in one transaction: the ids
        revoked. Nothing changes when a key with the same secret exists already."""
        others = "name = ? AND id <> ? AND revoked_at IS NULL"

        def work(tx: Transaction) -> list[str]:
            if not _insert_key(tx, key):
                return []
            revoked = [
                key_id for (key_id,) in tx.fetchall(f"SELECT id FROM api_keys WHERE {others}", (key.name, key.id))
            ]
            tx.execute(f"UPDATE api_keys SET revoked_at = ? WHERE {others}", (key.created_at, key.name, key.id))
            return revoked

        return await self._transact(work)

    async def active_keys_with_prefix(self, prefix: str) -> list[ApiKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE prefix = ? AND revoked_at IS NULL"
        return [_key(row) for row in await self._transact(lambda tx: tx.fetchall(sql, (prefix,)))]

    async def keys(self) -> list[ApiKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
        return [_key(row) for row in await self._transact(lambda tx: tx.fetchall(sql))]

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke an active key; False when there is no such active key."""
        sql = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        return await self._transact(lambda tx: tx.execute(sql, (time.time(), key_id))) == 1

    # Accounts and browser sessions

    async def add_account(self, account: Account) -> None:
        sql = f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        params = (
            account.id,
            account.username,
            account.password_hash,
            _words(account.scopes),
            account.plan,
            account.created_at,
            account.disabled_at,
        )
        await self._transact(lambda tx: tx.execute(sql, params))

    async def account_named(self, username: str) -> Account | None:
        sql = f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE username = ?"
        rows = await self._transact(lambda tx: tx.fetchall(sql, (username,)))
        return _account(rows[0]) if rows else None

    async def accounts(self) -> list[Account]:
        sql = f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY username"
        return [_account(row) for row in await self._transact(lambda tx: tx.fetchall(sql))]

    async def add_session(self, token_hash: str, account_id: str, expires_at: float) -> None:
        """Record a new session, dropping the expired ones of every account on the way."""

        def work(tx: Transaction) -> None:
            tx.execute("DELETE FROM sessions WHERE expires_at <= ?", (time.time(),))
            tx.execute(
                "INSERT INTO sessions (token_hash, account_id, expires_at) VALUES (?, ?, ?)",
                (token_hash, account_id, expires_at),
            )

        await self._transact(work)

    async def session_account(self, token_hash: str, now: float) -> Account | None:
        """The account of an unexpired session, unless the account is disabled."""
        sql = (
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE disabled_at IS NULL AND id = "
            "(SELECT account_id FROM sessions WHERE token_hash = ? AND expires_at > ?)"
        )
        rows = await self._transact(lambda tx: tx.fetchall(sql, (token_hash, now)))
        return _account(rows[0]) if rows else None

    async def delete_session(self, token_hash: str) -> None:
        await self._transact(lambda tx: tx.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,)))

    async def end_sessions(self, username: str) -> int | None:
        """End every session of the account; how many there were, None when there is no such account."""
        return await self._change_account(username, "", ())

    async def set_disabled(self, username: str, disabled_at: float | None) -> int | None:
        """Disable the account or, with None, enable it again; either ends its sessions (one that a
        sign-in racing the change made included): how many, None when there is no such account."""
        return await self._change_account(username, "disabled_at = ?", (disabled_at,))

    async def replace_password(self, username: str, password_hash: str) -> int | None:
        """Set a new password, ending every session opened with the old one; the sessions ended,
        None when there is no such account."""
        return await self._change_account(username, "password_hash = ?", (password_hash,))

    async def rehash_password(self, account_id: str, old_hash: str, new_hash: str) -> bool:
        """Replace `old_hash` by a re-hash of the same password, its sessions kept; False when the
        password changed meanwhile (`replace_password` wins)."""
        sql = "UPDATE accounts SET password_hash = ? WHERE id = ? AND password_hash = ?"
        return await self._transact(lambda tx: tx.execute(sql, (new_hash, account_id, old_hash))) == 1

    async def _change_account(self, username: str, assignments: str, params: Sequence[Any]) -> int | None:
        """Apply `assignments` (SQL, may be empty) to the account and end its sessions, in one transaction."""

        def work(tx: Transaction) -> int | None:
            rows = tx.fetchall("SELECT id FROM accounts WHERE username = ?", (username,))
            if not rows:
                return None
            if assignments:
                tx.execute(f"UPDATE accounts SET {assignments} WHERE id = ?", (*params, rows[0][0]))
            return tx.execute("DELETE FROM sessions WHERE account_id = ?", (rows[0][0],))

        return await self._transact(work)

    # LoRA adapters

    async def add_lora_adapter(self, adapter: LoraAdapter) -> None:
        sql = f"INSERT INTO lora_adapters ({_LORA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        await self._transact(lambda tx: tx.execute(sql, dataclasses.astuple(adapter)))

    async def lora_adapters(self, names: Sequence[str] | None = None) -> list[LoraAdapter]:
        """The adapters named (those that exist), or all of them, by name."""
        sql = f"SELECT {_LORA_COLUMNS} FROM lora_adapters"
        params: tuple[str, ...] = ()
        if names is not None:
            sql += f" WHERE name IN ({', '.join('?' * len(names))})" if names else " WHERE 1 = 0"
            params = tuple(names)
        rows = await self._transact(lambda tx: tx.fetchall(f"{sql} ORDER BY name", params))
        return [LoraAdapter(*row) for row in rows]

    async def remove_lora_adapter(self, name: str) -> bool:
        """False when there is no such adapter."""
        return await self._transact(lambda tx: tx.execute("DELETE FROM lora_adapters WHERE name = ?", (name,))) == 1

    # Rate limits, counted across every frontend sharing the store

    async def admit(
        self,
        principal: str,
        admission_id: str,
        now: float,
        window_start: float,
        lease_until: float | None,
        max_requests: int,
        max_running: int,
    ) -> RecentUse:
        """Admit a request, holding a generation lease until `lease_until` (or `release`; None: none),
        when the principal has fewer than `max_requests` admitted after `window_start` and fewer than
        `max_running` leases held. The principal's row is locked first (SQLite's write lock covers the
        whole transaction; PostgreSQL's upsert locks the row), so concurrent admissions count each other.
        """
        lock = (
            "INSERT INTO rate_limit_principals (principal, last_request_at) VALUES (?, ?) "
            "ON CONFLICT (principal) DO UPDATE SET last_request_at = excluded.last_request_at"
        )
        count = (
            "SELECT COALESCE(SUM(CASE WHEN admitted_at > ? THEN 1 ELSE 0 END), 0), "
            "MIN(CASE WHEN admitted_at > ? THEN admitted_at END), "
            "COALESCE(SUM(CASE WHEN lease_until > ? THEN 1 ELSE 0 END), 0) "
            "FROM rate_limit_admissions WHERE principal = ?"
        )
        insert = "INSERT INTO rate_limit_admissions (id, principal, admitted_at, lease_until) VALUES (?, ?, ?, ?)"

        def work(tx: Transaction) -> RecentUse:
            tx.execute(lock, (principal, now))
            [(requests, oldest, running)] = tx.fetchall(count, (window_start, window_start, now, principal))
            admitted = requests < max_requests and running < max_running
            if admitted:
                tx.execute(insert, (admission_id, principal, now, lease_until))
            return RecentUse(admitted, int(requests), oldest, int(running))

        return await self._transact(work)

    async def forget_admissions(self, now: float, window_start: float, every: float) -> int | None:
        """Delete the admissions of every principal (keys, accounts, sign-in counts) admitted before
        `window_start` whose lease has ended, and the principals not seen since: the rows used ones,
        or guessed usernames, would otherwise leave for good. Done at most once per `every` seconds
        by all the frontends sharing the store together; the admissions deleted, None when skipped.

        `admit` deletes nothing itself: two transactions deleting the same rows in different orders
        could deadlock on PostgreSQL. The chore's row serialises the sweeps, and a sweep waits at
        most for one admission's row lock, while an admission never waits for the sweep's rows.
        """
        claim = "UPDATE store_chores SET done_at = ? WHERE name = 'forget_admissions' AND done_at <= ?"
        admissions = (
            "DELETE FROM rate_limit_admissions WHERE admitted_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
        )
        principals = "DELETE FROM rate_limit_principals WHERE last_request_at <= ?"

        def work(tx: Transaction) -> int | None:
            if tx.execute(claim, (now, now - every)) != 1:
                return None
            deleted = tx.execute(admissions, (window_start, now))
            tx.execute(principals, (window_start,))
            return deleted

        return await self._transact(work)

    async def release(self, admission_id: str) -> None:
        """End an admitted request's generation lease; its admission still counts in the window."""
        sql = "UPDATE rate_limit_admissions SET lease_until = NULL WHERE id = ?"
        await self._transact(lambda tx: tx.execute(sql, (admission_id,)))

    # The usage ledger

    async def record_usage(self, record: UsageRecord) -> None:
        columns = list(UsageRecord.__dataclass_fields__)
        sql = f"INSERT INTO usage_ledger ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        params = tuple(getattr(record, column) for column in columns)
        await self._transact(lambda tx: tx.execute(sql, params))

    async def usage_summary(self, since: float = 0.0) -> list[UsageSummary]:
        """Per key or account, the requests made since `since` and what they cost."""
        name = "COALESCE(k.name, a.username, '')"
        sql = (
            f"SELECT u.principal, {name}, COUNT(*), SUM(CASE WHEN u.status >= 400 THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN u.status < 400 THEN COALESCE(u.n, 0) ELSE 0 END), SUM(u.energy_kwh), SUM(u.credits) "
            "FROM usage_ledger u LEFT JOIN api_keys k ON k.id = u.principal "
            "LEFT JOIN accounts a ON a.id = u.principal "
            f"WHERE u.created_at >= ? GROUP BY u.principal, {name} ORDER BY u.principal"
        )
        by_code = (
            "SELECT principal, code, COUNT(*) FROM usage_ledger WHERE created_at >= ? AND status >= 400 "
            "GROUP BY principal, code"
        )

        def work(tx: Transaction) -> list[UsageSummary]:
            errors: dict[str, dict[str, int]] = {}
            for principal, code, count in tx.fetchall(by_code, (since,)):
                errors.setdefault(principal, {})[code or ""] = int(count)
            return [UsageSummary(*row, errors=errors.get(row[0], {})) for row in tx.fetchall(sql, (since,))]

        return await self._transact(work)

    # Model rollouts

    async def routes(self) -> dict[str, Route]:
        sql = f"SELECT {_ROUTE_COLUMNS} FROM model_routes"
        return {row[0]: Route(*row) for row in await self._transact(lambda tx: tx.fetchall(sql))}

    async def replace_route(self, route: Route) -> bool:
        """Write `route` if the stored one is still at `route.generation - 1` (none for generation 1);
        False when another change came first."""
        insert = (
            f"INSERT INTO model_routes ({_ROUTE_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING"
        )
        update = (
            "UPDATE model_routes SET stable_version = ?, previous_version = ?, canary_version = ?, "
            "canary_percent = ?, generation = ?, updated_at = ? WHERE model = ? AND generation = ?"
        )
        values = (route.stable_version, route.previous_version, route.canary_version, route.canary_percent)
        if route.generation == 1:
            params: tuple[Any, ...] = (route.model, *values, route.generation, time.time())
            return await self._transact(lambda tx: tx.execute(insert, params)) == 1
        params = (*values, route.generation, time.time(), route.model, route.generation - 1)
        return await self._transact(lambda tx: tx.execute(update, params)) == 1

    async def beat(self, heartbeat: Heartbeat) -> None:
        sql = (
            "INSERT INTO frontend_heartbeats (frontend, address, serving, in_flight, seen_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (frontend) DO UPDATE SET address = excluded.address, serving = excluded.serving, "
            "in_flight = excluded.in_flight, seen_at = excluded.seen_at"
        )
        serving, in_flight = json.dumps(heartbeat.serving), json.dumps(heartbeat.in_flight)
        params = (heartbeat.frontend, heartbeat.address, serving, in_flight, heartbeat.seen_at)
        await self._transact(lambda tx: tx.execute(sql, params))

    async def heartbeats(self, since: float) -> list[Heartbeat]:
        """The frontends heard from since `since`: those still running."""
        sql = (
            "SELECT frontend, address, serving, in_flight, seen_at FROM frontend_heartbeats "
            "WHERE seen_at >= ? ORDER BY address, frontend"
        )
        rows = await self._transact(lambda tx: tx.fetchall(sql, (since,)))
        return [Heartbeat(f, a, json.loads(s), json.loads(i), t) for f, a, s, i, t in rows]

    async def forget_frontend(self, frontend: str) -> None:
        sql = "DELETE FROM frontend_heartbeats WHERE frontend = ?"
        await self._transact(lambda tx: tx.execute(sql, (frontend,)))


def _insert_key(tx: Transaction, key: ApiKey) -> bool:
    """False when a key with the same secret exists already."""
    sql = f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    params = (
        key.id,
        key.name,
        key.prefix,
        key.secret_hash,
        _words(key.scopes),
        key.plan,
        key.created_at,
        key.revoked_at,
    )
    return tx.execute(sql, params) == 1


def _words(values: frozenset[str]) -> str:
    """Scopes and benefits are stored as one space-separated column, as OAuth writes scopes."""
    return " ".join(sorted(values))


def _plan(row: tuple[Any, ...]) -> Plan:
    name, benefits, requests_per_minute, concurrent_generations = row
    return Plan(name, frozenset(benefits.split()), requests_per_minute, concurrent_generations)


def _key(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, prefix, secret_hash, scopes, plan, created_at, revoked_at = row
    return ApiKey(key_id, name, prefix, secret_hash, frozenset(scopes.split()), plan, created_at, revoked_at)


def _account(row: tuple[Any, ...]) -> Account:
    account_id, username, password_hash, scopes, plan, created_at, disabled_at = row
    return Account(account_id, username, password_hash, frozenset(scopes.split()), plan, created_at, disabled_at)

"""Webhooks: each key's or account's signing secret, and the deliveries every frontend sends.

Secrets and a delivery's message (its target URL and body) are stored sealed (frontend/sealing.py);
the message is dropped once the delivery ends, leaving its record and attempts. A frontend claims a
due delivery in one transaction (PostgreSQL's `FOR UPDATE SKIP LOCKED`, SQLite's write lock), moving
its due time past a lease: a frontend that dies mid-send leaves it due again when the lease ends, and
a record of an attempt names the claim, so a sender whose lease lapsed changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from frontend.store.database import Database, Repository
from frontend.store.schema import Transaction

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class NewDelivery:
    id: str
    """The `webhook-id` header: the same on every attempt, so a receiver can drop a repeat."""
    principal: str
    job_id: str
    event_type: str
    host: str
    """The target's host, kept in clear for the operator's listing."""
    message: str
    """Sealed: the target URL and the body."""
    created_at: float


@dataclass(frozen=True)
class ClaimedDelivery:
    id: str
    principal: str
    job_id: str
    event_type: str
    message: str
    attempts: int
    """Attempts made before this one."""
    claim: str


@dataclass(frozen=True)
class Attempt:
    number: int
    started_at: float
    duration_ms: float
    response_status: int | None
    """None: no response (refused, unreachable, timed out)."""
    error: str | None


@dataclass(frozen=True)
class DeliveryRecord:
    id: str
    principal: str
    job_id: str
    event_type: str
    host: str
    status: str
    attempts: tuple[Attempt, ...]
    created_at: float
    due_at: float | None
    ended_at: float | None


class WebhookSecrets(Repository):
    async def replace(self, principal: str, sealed: str, now: float) -> None:
        """Set `principal`'s secret, replacing any it had."""
        sql = (
            "INSERT INTO webhook_secrets (principal, secret, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (principal) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at"
        )
        await self._transact(lambda tx: tx.execute(sql, (principal, sealed, now)))

    async def sealed(self, principal: str) -> str | None:
        sql = "SELECT secret FROM webhook_secrets WHERE principal = ?"
        rows = await self._transact(lambda tx: tx.fetchall(sql, (principal,)))
        return str(rows[0][0]) if rows else None


class WebhookDeliveries(Repository):
    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._skip_locked = database.skip_locked

    async def add(self, delivery: NewDelivery) -> None:
        """A pending delivery, due now."""
        sql = (
            "INSERT INTO webhook_deliveries (id, principal, job_id, event_type, host, message, status, attempts, "
            "created_at, due_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
        )
        d = delivery
        params = (d.id, d.principal, d.job_id, d.event_type, d.host, d.message, d.created_at, d.created_at)
        await self._transact(lambda tx: tx.execute(sql, params))

    async def claim(
        self, claim: str, now: float, lease_seconds: float, limit: int
    ) -> tuple[list[ClaimedDelivery], float | None]:
        """Up to `limit` due deliveries, claimed as `claim` until `now + lease_seconds`; and when the
        next pending one is due (None: none is pending)."""
        select = (
            "SELECT id, principal, job_id, event_type, message, attempts FROM webhook_deliveries "
            f"WHERE status = 'pending' AND due_at <= ? ORDER BY due_at, id LIMIT ?{self._skip_locked}"
        )
        update = "UPDATE webhook_deliveries SET claim = ?, due_at = ? WHERE id = ?"
        next_due = "SELECT MIN(due_at) FROM webhook_deliveries WHERE status = 'pending'"

        def claim_due(tx: Transaction) -> tuple[list[ClaimedDelivery], float | None]:
            rows = tx.fetchall(select, (now, limit))
            for row in rows:
                tx.execute(update, (claim, now + lease_seconds, row[0]))
            (due,) = tx.fetchall(next_due)[0]
            return [ClaimedDelivery(i, p, j, e, m, a, claim) for i, p, j, e, m, a in rows], due

        return await self._transact(claim_due)

    async def record(self, delivery: ClaimedDelivery, attempt: Attempt, status: str, due_at: float | None) -> bool:
        """Record `attempt` and leave the delivery `status` (pending again at `due_at`, or ended, its
        message dropped); False when the claim had lapsed and another frontend holds it."""
        ended = status != PENDING
        update = (
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, due_at = ?, claim = NULL, ended_at = ?, "
            "message = CASE WHEN ? = 1 THEN NULL ELSE message END WHERE id = ? AND claim = ?"
        )
        insert = (
            "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, response_status, error) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        a = attempt
        ended_at = a.started_at + a.duration_ms / 1000 if ended else None
        params = (status, a.number, due_at, ended_at, int(ended), delivery.id, delivery.claim)

        def record(tx: Transaction) -> bool:
            if not tx.execute(update, params):
                return False
            tx.execute(insert, (delivery.id, a.number, a.started_at, a.duration_ms, a.response_status, a.error))
            return True

        return await self._transact(record)

    async def listed(
        self, principal: str | None = None, job_id: str | None = None, limit: int = 50
    ) -> list[DeliveryRecord]:
        """The newest deliveries (of one principal, or one job), each with its attempts."""
        conditions, params = ["1 = 1"], []
        if principal is not None:
            conditions.append("principal = ?")
            params.append(principal)
        if job_id is not None:
            conditions.append("job_id = ?")
            params.append(job_id)
        deliveries = (
            "SELECT id, principal, job_id, event_type, host, status, created_at, due_at, ended_at "
            f"FROM webhook_deliveries WHERE {' AND '.join(conditions)} ORDER BY created_at DESC, id LIMIT ?"
        )

        def read(tx: Transaction) -> list[DeliveryRecord]:
            rows = tx.fetchall(deliveries, (*params, limit))
            return [_record(row, _attempts(tx, row[0])) for row in rows]

        return await self._transact(read)


def _attempts(tx: Transaction, delivery_id: str) -> tuple[Attempt, ...]:
    sql = (
        "SELECT attempt, started_at, duration_ms, response_status, error FROM webhook_attempts "
        "WHERE delivery_id = ? ORDER BY attempt"
    )
    return tuple(Attempt(*row) for row in tx.fetchall(sql, (delivery_id,)))


def _record(row: Sequence[Any], attempts: tuple[Attempt, ...]) -> DeliveryRecord:
    id_, principal, job_id, event_type, host, status, created_at, due_at, ended_at = row
    return DeliveryRecord(id_, principal, job_id, event_type, host, status, attempts, created_at, due_at, ended_at)

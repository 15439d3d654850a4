"""Asynchronous jobs: the queue every frontend's workers claim from (frontend/jobs.py says how a job
lives). The request and the result are stored sealed (frontend/sealing.py), as opaque text; the
store reads neither.

A worker claims the first queued job of a model with room, in order of priority then age, in one
transaction: PostgreSQL's `FOR UPDATE SKIP LOCKED` lets concurrent claimers pass each other's rows,
SQLite's write lock serialises them. A claim is a random token and a lease: the worker renews the
lease while the job runs, and every write of its own names the token, so a worker whose lease
lapsed (and whose job another worker took) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from frontend.store.database import Database, Repository
from frontend.store.schema import Transaction

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "expired",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED)
ENDED = (SUCCEEDED, FAILED, CANCELLED, EXPIRED)


@dataclass(frozen=True)
class JobRecord:
    """A job as its owner and the operator see it: never its request or result."""

    id: str
    principal: str
    model: str
    """The public id the request named (`MODEL:batch` included)."""
    pipeline: str
    priority: int
    """0 for `Prefer: respond-async`, 1 for `:batch`: lower runs first."""
    status: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    attempts: int
    step: int
    steps: int
    cancel_requested: bool
    result_expires_at: float | None
    error: str | None
    """The API's error envelope, as JSON, of a failed job."""
    queue_position: int | None = None
    """1 for the next job to run, among every caller's; None once it left the queue."""


@dataclass(frozen=True)
class NewJob:
    id: str
    principal: str
    model: str
    pipeline: str
    priority: int
    created_at: float
    steps: int
    request: str
    """Sealed: the request's JSON, its `webhook_url` included."""


@dataclass(frozen=True)
class ClaimedJob:
    record: JobRecord
    claim: str
    request: str
    """Sealed."""


_COLUMNS = (
    "id, principal, model, pipeline, priority, "
    "CASE WHEN status = 'succeeded' AND result_expires_at <= ? THEN 'expired' ELSE status END, "
    "created_at, started_at, ended_at, attempts, step, steps, cancel_requested, result_expires_at, error"
)
_AHEAD = (
    "SELECT COUNT(*) FROM jobs WHERE status = 'queued' "
    "AND (priority < ? OR (priority = ? AND (created_at < ? OR (created_at = ? AND id < ?))))"
)


class Jobs(Repository):
    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._skip_locked = database.skip_locked

    async def add(self, job: NewJob, max_unfinished: int) -> bool:
        """Queue `job`, unless its principal has `max_unfinished` jobs queued or running (False). The
        principal's rate-limit row is locked first, as `RateLimits.admit` does, so concurrent
        submissions count each other on PostgreSQL too."""
        lock = (
            "INSERT INTO rate_limit_principals (principal, last_request_at) VALUES (?, ?) "
            "ON CONFLICT (principal) DO UPDATE SET last_request_at = excluded.last_request_at"
        )
        count = "SELECT COUNT(*) FROM jobs WHERE principal = ? AND status IN ('queued', 'running')"
        insert = (
            "INSERT INTO jobs (id, principal, model, pipeline, priority, status, created_at, attempts, "
            "cancel_requested, step, steps, request) VALUES (?, ?, ?, ?, ?, 'queued', ?, 0, 0, 0, ?, ?)"
        )
        params = (job.id, job.principal, job.model, job.pipeline, job.priority, job.created_at, job.steps)

        def work(tx: Transaction) -> bool:
            tx.execute(lock, (job.principal, job.created_at))
            [(unfinished,)] = tx.fetchall(count, (job.principal,))
            if unfinished >= max_unfinished:
                return False
            tx.execute(insert, (*params, job.request))
            return True

        return await self._transact(work)

    async def get(self, job_id: str, principal: str | None, now: float) -> JobRecord | None:
        owned, params = _owned(job_id, principal)
        return next(iter(await self._records(f"SELECT {_COLUMNS} FROM jobs WHERE {owned}", (now, *params))), None)

    async def page(self, principal: str | None, before: str | None, limit: int, now: float) -> list[JobRecord]:
        """Newest first (ids grow with time), those older than the job `before` when given."""
        conditions = [("principal = ?", principal), ("id < ?", before)]
        given = [(sql, value) for sql, value in conditions if value is not None]
        where = " AND ".join(["1 = 1", *(sql for sql, _ in given)])
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY id DESC LIMIT ?"
        return await self._records(sql, (now, *(value for _, value in given), limit))

    async def _records(self, sql: str, params: Sequence[Any]) -> list[JobRecord]:
        def work(tx: Transaction) -> list[JobRecord]:
            records = [_record(row) for row in tx.fetchall(sql, params)]
            return [_with_position(tx, record) for record in records]

        return await self._transact(work)

    async def result(self, job_id: str, principal: str | None, now: float) -> str | None:
        """The sealed result of a succeeded job not yet expired."""
        owned, params = _owned(job_id, principal)
        sql = f"SELECT result FROM jobs WHERE {owned} AND status = 'succeeded' AND result_expires_at > ?"
        rows = await self._transact(lambda tx: tx.fetchall(sql, (*params, now)))
        return rows[0][0] if rows else None

    async def consume(self, job_id: str, principal: str | None, now: float) -> tuple[JobRecord, str] | None:
        """The succeeded job and its sealed result, deleted in the same transaction: of two
        concurrent fetches, one gets it (the other's DELETE changes no row)."""
        owned, params = _owned(job_id, principal)
        select = f"SELECT {_COLUMNS}, result FROM jobs WHERE {owned} AND status = 'succeeded' AND result_expires_at > ?"
        delete = "DELETE FROM jobs WHERE id = ? AND status = 'succeeded'"

        def work(tx: Transaction) -> tuple[JobRecord, str] | None:
            rows = tx.fetchall(select, (now, *params, now))
            if not rows or tx.execute(delete, (job_id,)) != 1:
                return None
            return _record(rows[0][:-1]), rows[0][-1]

        return await self._transact(work)

    async def cancel(self, job_id: str, principal: str | None, now: float) -> bool:
        """Cancel a queued job at once (it never runs), or ask a running one's worker to stop it;
        False when the job is not the principal's or has ended."""
        owned, params = _owned(job_id, principal)
        queued = (
            f"UPDATE jobs SET status = 'cancelled', ended_at = ?, request = NULL WHERE {owned} AND status = 'queued'"
        )
        running = f"UPDATE jobs SET cancel_requested = 1 WHERE {owned} AND status = 'running'"

        def work(tx: Transaction) -> bool:
            return bool(tx.execute(queued, (now, *params)) or tx.execute(running, params))

        return await self._transact(work)

    async def claim(
        self, pipelines: Sequence[str], claim: str, now: float, lease_until: float, max_attempts: int
    ) -> ClaimedJob | None:
        """Take the next job of one of `pipelines`: a queued one, or a running one whose worker's
        lease lapsed and which has attempts left."""
        if not pipelines:
            return None
        candidates = (
            f"SELECT id FROM jobs WHERE pipeline IN ({', '.join('?' * len(pipelines))}) AND cancel_requested = 0 "
            "AND (status = 'queued' OR (status = 'running' AND lease_until <= ? AND attempts < ?)) "
            f"ORDER BY priority, created_at, id LIMIT 1{self._skip_locked}"
        )
        take = (
            "UPDATE jobs SET status = 'running', claim = ?, lease_until = ?, attempts = attempts + 1, "
            "started_at = ?, step = 0 WHERE id = ?"
        )
        read = f"SELECT {_COLUMNS}, request FROM jobs WHERE id = ?"

        def work(tx: Transaction) -> ClaimedJob | None:
            rows = tx.fetchall(candidates, (*pipelines, now, max_attempts))
            if not rows:
                return None
            [(job_id,)] = rows
            tx.execute(take, (claim, lease_until, now, job_id))
            [row] = tx.fetchall(read, (now, job_id))
            return ClaimedJob(_record(row[:-1]), claim, row[-1])

        return await self._transact(work)

    async def renew(self, job_id: str, claim: str, lease_until: float, step: int, steps: int) -> bool | None:
        """Extend the claim's lease and record the job's progress: whether its owner asked to cancel
        it, or None when the claim is lost (the lease lapsed and another worker took the job)."""
        update = (
            "UPDATE jobs SET lease_until = ?, step = ?, steps = ? WHERE id = ? AND claim = ? AND status = 'running'"
        )
        read = "SELECT cancel_requested FROM jobs WHERE id = ?"

        def work(tx: Transaction) -> bool | None:
            if tx.execute(update, (lease_until, step, steps, job_id, claim)) != 1:
                return None
            return bool(tx.fetchall(read, (job_id,))[0][0])

        return await self._transact(work)

    async def finish(
        self,
        job_id: str,
        claim: str,
        status: str,
        now: float,
        progress: tuple[int, int],
        result: str | None = None,
        result_expires_at: float | None = None,
        error: str | None = None,
    ) -> bool:
        """End the claimed job at `progress` (step, steps); its request is deleted. False when the
        claim was lost."""
        sql = (
            "UPDATE jobs SET status = ?, ended_at = ?, step = ?, steps = ?, result = ?, result_expires_at = ?, "
            "error = ?, request = NULL, lease_until = NULL WHERE id = ? AND claim = ? AND status = 'running'"
        )
        params = (status, now, *progress, result, result_expires_at, error, job_id, claim)
        return await self._transact(lambda tx: tx.execute(sql, params)) == 1

    async def release(self, job_id: str, claim: str) -> None:
        """Put a claimed job back in the queue, its attempt not counted (its frontend is stopping)."""
        sql = (
            "UPDATE jobs SET status = 'queued', claim = NULL, lease_until = NULL, attempts = attempts - 1, step = 0 "
            "WHERE id = ? AND claim = ? AND status = 'running'"
        )
        await self._transact(lambda tx: tx.execute(sql, (job_id, claim)))

    async def sweep(self, now: float, every: float, max_attempts: int, forget_before: float, error: str) -> bool:
        """At most once per `every` seconds across the frontends: delete expired results, end the jobs
        whose worker died holding them (cancelled when asked to, else failed with `error` once
        `max_attempts` ran), and forget jobs that ended before `forget_before`. Whether it ran."""
        claim = "UPDATE store_chores SET done_at = ? WHERE name = 'sweep_jobs' AND done_at <= ?"
        lapsed = "status = 'running' AND lease_until <= ?"
        statements = (
            (
                "UPDATE jobs SET status = 'expired', result = NULL "
                "WHERE status = 'succeeded' AND result_expires_at <= ?",
                (now,),
            ),
            (
                f"UPDATE jobs SET status = 'cancelled', ended_at = ?, request = NULL WHERE {lapsed} "
                "AND cancel_requested = 1",
                (now, now),
            ),
            (
                f"UPDATE jobs SET status = 'failed', ended_at = ?, request = NULL, error = ? WHERE {lapsed} "
                "AND attempts >= ?",
                (now, error, now, max_attempts),
            ),
            ("DELETE FROM jobs WHERE ended_at <= ?", (forget_before,)),
        )

        def work(tx: Transaction) -> bool:
            if tx.execute(claim, (now, now - every)) != 1:
                return False
            for sql, params in statements:
                tx.execute(sql, params)
            return True

        return await self._transact(work)

    async def counts(self, now: float) -> tuple[dict[str, int], float | None]:
        """Jobs by status, and the age in seconds of the oldest queued one (None: none queued)."""
        by_status = (
            "SELECT CASE WHEN status = 'succeeded' AND result_expires_at <= ? THEN 'expired' ELSE status END, "
            "COUNT(*) FROM jobs GROUP BY 1"
        )
        oldest = "SELECT MIN(created_at) FROM jobs WHERE status = 'queued'"

        def work(tx: Transaction) -> tuple[dict[str, int], float | None]:
            counts = dict.fromkeys(STATUSES, 0)
            for status, count in tx.fetchall(by_status, (now,)):
                counts[status] += int(count)
            [(created,)] = tx.fetchall(oldest)
            return counts, None if created is None else now - created

        return await self._transact(work)


def _owned(job_id: str, principal: str | None) -> tuple[str, tuple[str, ...]]:
    """The condition naming a job of `principal`'s, or of anyone's when None (the operator)."""
    if principal is None:
        return "id = ?", (job_id,)
    return "id = ? AND principal = ?", (job_id, principal)


def _record(row: Sequence[Any]) -> JobRecord:
    (job_id, principal, model, pipeline, priority, status, created, started, ended) = row[:9]
    (attempts, step, steps, cancel_requested, expires, error) = row[9:]
    return JobRecord(
        job_id,
        principal,
        model,
        pipeline,
        int(priority),
        status,
        created,
        started,
        ended,
        int(attempts),
        int(step),
        int(steps),
        bool(cancel_requested),
        expires,
        error,
    )


def _with_position(tx: Transaction, record: JobRecord) -> JobRecord:
    if record.status != QUEUED:
        return record
    key = (record.priority, record.priority, record.created_at, record.created_at, record.id)
    [(ahead,)] = tx.fetchall(_AHEAD, key)
    return JobRecord(**{**record.__dict__, "queue_position": int(ahead) + 1})

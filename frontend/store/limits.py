"""Rate limits, counted across every frontend sharing the store: a row per admitted request."""

from __future__ import annotations

from dataclasses import dataclass

from frontend.store.database import Repository
from frontend.store.schema import Transaction


@dataclass(frozen=True)
class RecentUse:
    """A principal's requests found when one more arrived, and whether it was admitted."""

    admitted: bool
    requests: int  # admitted within the rate window
    oldest: float | None  # when the window's oldest request was admitted
    running: int  # requests holding a generation lease


class RateLimits(Repository):
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

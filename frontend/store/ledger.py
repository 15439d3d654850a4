"""The usage ledger: what each admitted request cost, summed per key or account."""

from __future__ import annotations

from dataclasses import dataclass, field

from frontend.store.database import Repository
from frontend.store.schema import Transaction


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


class Ledger(Repository):
    async def record(self, record: UsageRecord) -> None:
        columns = list(UsageRecord.__dataclass_fields__)
        sql = f"INSERT INTO usage_ledger ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        params = tuple(getattr(record, column) for column in columns)
        await self._transact(lambda tx: tx.execute(sql, params))

    async def summary(self, since: float = 0.0) -> list[UsageSummary]:
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
            return [
                UsageSummary(principal, label, requests, failed, images, energy_kwh, credits, errors.get(principal, {}))
                for principal, label, requests, failed, images, energy_kwh, credits in tx.fetchall(sql, (since,))
            ]

        return await self._transact(work)

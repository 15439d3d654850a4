"""Heartbeats: what each running frontend serves, so a rollout knows when every one has switched."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from frontend.store.database import Repository


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


class Heartbeats(Repository):
    async def beat(self, heartbeat: Heartbeat) -> None:
        sql = (
            "INSERT INTO frontend_heartbeats (frontend, address, serving, in_flight, seen_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (frontend) DO UPDATE SET address = excluded.address, serving = excluded.serving, "
            "in_flight = excluded.in_flight, seen_at = excluded.seen_at"
        )
        serving, in_flight = json.dumps(heartbeat.serving), json.dumps(heartbeat.in_flight)
        params = (heartbeat.frontend, heartbeat.address, serving, in_flight, heartbeat.seen_at)
        await self._transact(lambda tx: tx.execute(sql, params))

    async def since(self, since: float) -> list[Heartbeat]:
        """The frontends heard from since `since`: those still running."""
        sql = (
            "SELECT frontend, address, serving, in_flight, seen_at FROM frontend_heartbeats "
            "WHERE seen_at >= ? ORDER BY address, frontend"
        )
        rows = await self._transact(lambda tx: tx.fetchall(sql, (since,)))
        return [Heartbeat(f, a, json.loads(s), json.loads(i), t) for f, a, s, i, t in rows]

    async def forget(self, frontend: str) -> None:
        sql = "DELETE FROM frontend_heartbeats WHERE frontend = ?"
        await self._transact(lambda tx: tx.execute(sql, (frontend,)))

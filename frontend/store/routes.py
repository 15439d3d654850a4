"""The routing table: which versions of each pipeline every frontend serves (`imagegen rollout`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from frontend.store.database import Repository


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


_ROUTE_COLUMNS = "model, stable_version, previous_version, canary_version, canary_percent, generation"


class Routes(Repository):
    async def all(self) -> dict[str, Route]:
        sql = f"SELECT {_ROUTE_COLUMNS} FROM model_routes"
        return {row[0]: Route(*row) for row in await self._transact(lambda tx: tx.fetchall(sql))}

    async def replace(self, route: Route) -> bool:
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

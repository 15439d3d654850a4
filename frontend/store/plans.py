"""Plans (what a key or account may do and how fast) and their prices per model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from frontend.store.database import Repository, words


@dataclass(frozen=True)
class Plan:
    name: str
    benefits: frozenset[str] = frozenset()
    requests_per_minute: int | None = None
    """None: the server's default (settings)."""
    concurrent_generations: int | None = None
    batch_discount: float = 0.0
    """The fraction taken off the credits of `:batch` jobs (0.5: half price)."""


@dataclass(frozen=True)
class Price:
    """Credits for one image: `per_image + per_megapixel_step * megapixels * steps`."""

    per_image: float
    per_megapixel_step: float


_PLAN_COLUMNS = "name, benefits, requests_per_minute, concurrent_generations, batch_discount"


class Plans(Repository):
    async def add(self, plan: Plan) -> None:
        sql = f"INSERT INTO plans ({_PLAN_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
        params = (
            plan.name,
            words(plan.benefits),
            plan.requests_per_minute,
            plan.concurrent_generations,
            plan.batch_discount,
        )
        await self._transact(lambda tx: tx.execute(sql, params))

    async def named(self, name: str) -> Plan:
        rows = await self._transact(
            lambda tx: tx.fetchall(f"SELECT {_PLAN_COLUMNS} FROM plans WHERE name = ?", (name,))
        )
        if not rows:
            raise ValueError(f"there is no plan {name!r}; `imagegen plans list` shows them")
        return _plan(rows[0])

    async def all(self) -> list[Plan]:
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


def _plan(row: tuple[Any, ...]) -> Plan:
    name, benefits, requests_per_minute, concurrent_generations, batch_discount = row
    return Plan(name, frozenset(benefits.split()), requests_per_minute, concurrent_generations, batch_discount)

"""Per-key admission: requests in any 60 s and generations running at once, refused with 429; and
sign-in attempts, per client address and per username.

The counts live in the store, so frontend replicas sharing one PostgreSQL enforce one limit
together: a row per admitted request, kept for the window, and holding a generation lease until
the request ends. A replica that dies mid-request leaves a lease that lapses after the request's deadline.
Rows whose window has passed are deleted, whoever they counted, at most a window after it passed.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from frontend.auth.credentials import Principal
from frontend.errors import RateLimited
from frontend.store import Store
from frontend.store.limits import RecentUse
from frontend.store.plans import Plan

WINDOW_SECONDS = 60.0
BUSY_RETRY_SECONDS = 1
"""Retry-After when all of a key's generation slots are taken: when one frees up is not known."""
LEASE_MARGIN_SECONDS = 60.0
"""A lease outlasts the request's deadline by this much: the ledger is written after the deadline."""
SWEEP_SECONDS = WINDOW_SECONDS
"""How often the rows of past windows are deleted (`Store.forget_admissions`), by whichever frontend
admits a request first once this has passed."""
USERNAME_ADDRESSES = 10
"""A username's sign-in attempts from all addresses together may reach this many times its limit
from one address: a guess spread over many addresses stays bounded, and locking its owner out takes
this many addresses, where one address used to suffice."""


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int
    concurrent_generations: int


class RateLimiter:
    def __init__(
        self, store: Store, defaults: Limits, request_timeout: float, clock: Callable[[], float] = time.time
    ) -> None:
        """`request_timeout`: the requests' deadline, past which a generation slot whose request never
        released it (its replica died) frees up; `clock`: wall time, the one clock replicas share."""
        self.defaults = defaults
        self._store = store
        self._lease_seconds = request_timeout + LEASE_MARGIN_SECONDS
        self._clock = clock
        self._next_sweep = -math.inf

    def limits(self, plan: Plan) -> Limits:
        """The plan's own limits where it sets them, the server's defaults elsewhere."""
        return Limits(
            plan.requests_per_minute or self.defaults.requests_per_minute,
            plan.concurrent_generations or self.defaults.concurrent_generations,
        )

    @contextlib.asynccontextmanager
    async def admit(self, principal: Principal) -> AsyncIterator[None]:
        """Hold one of the principal's generation slots for the request's lifetime, or raise RateLimited."""
        limits = self.limits(principal.plan)
        admission_id = await self._admit(principal.id, limits, "requests in a minute for this key")
        try:
            yield
        finally:
            await self._store.limits.release(admission_id)

    async def count_sign_in(self, username: str, address: str, per_username: int, per_address: int) -> None:
        """Count a sign-in attempt, or raise RateLimited past `per_address` attempts a minute from the
        client's address, `per_username` for the username from that address, or USERNAME_ADDRESSES
        times that for the username from everywhere. Right or wrong, so that guessing passwords gets
        no answer at all once over a limit; called before the password is hashed. Counted in that
        order up to the first refusal, so one address's refused attempts never count elsewhere."""
        for subject, limit, counted in (
            (f"sign-in-address:{address}", per_address, "sign-in attempts a minute from this address"),
            (f"sign-in-pair:{address}/{username}", per_username, "sign-in attempts a minute for this username"),
            (f"sign-in:{username}", per_username * USERNAME_ADDRESSES, "sign-in attempts a minute for this username"),
        ):
            await self._admit(subject, Limits(limit, limit), counted, lease=False)

    async def _admit(self, subject: str, limits: Limits, counted: str, lease: bool = True) -> str:
        """Record one admission of `subject` under `limits`; its id, whose lease (if `lease`) `release` ends."""
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            await self._store.limits.forget_admissions(now, now - WINDOW_SECONDS, SWEEP_SECONDS)
        admission_id = f"adm_{secrets.token_hex(8)}"
        use = await self._store.limits.admit(
            subject,
            admission_id,
            now,
            window_start=now - WINDOW_SECONDS,
            lease_until=now + self._lease_seconds if lease else None,
            max_requests=limits.requests_per_minute,
            max_running=limits.concurrent_generations,
        )
        if not use.admitted:
            raise _refusal(use, limits, now, counted)
        return admission_id


def _refusal(use: RecentUse, limits: Limits, now: float, counted: str) -> RateLimited:
    if use.requests >= limits.requests_per_minute and use.oldest is not None:
        retry_after = max(1, math.ceil(use.oldest + WINDOW_SECONDS - now))
        return RateLimited(
            f"More than {limits.requests_per_minute} {counted}; retry in {retry_after} s.",
            retry_after=retry_after,
        )
    return RateLimited(
        f"This key already has {use.running} generations running, its limit.",
        retry_after=BUSY_RETRY_SECONDS,
    )

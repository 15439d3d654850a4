"""Per-key admission: requests in any 60 s and generations running at once, refused with 429.

The counts live in this process. Behind several replicas each enforces the limits on the requests
it receives; counting in the shared store instead is the rollout's choice to make.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from frontend.api.errors import RateLimited
from frontend.auth.credentials import Principal
from frontend.store.repository import Plan

WINDOW_SECONDS = 60.0
BUSY_RETRY_SECONDS = 1
"""Retry-After when all of a key's generation slots are taken: when one frees up is not known."""


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int
    concurrent_generations: int


class RateLimiter:
    def __init__(self, defaults: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.defaults = defaults
        self._clock = clock
        self._admitted: dict[str, deque[float]] = {}  # per principal, admission times in the window
        self._running: dict[str, int] = {}

    def limits(self, plan: Plan) -> Limits:
        """The plan's own limits where it sets them, the server's defaults elsewhere."""
        return Limits(
            plan.requests_per_minute or self.defaults.requests_per_minute,
            plan.concurrent_generations or self.defaults.concurrent_generations,
        )

    @contextlib.contextmanager
    def admit(self, principal: Principal) -> Iterator[None]:
        """Hold one of the principal's generation slots for the request's lifetime, or raise RateLimited."""
        limits = self.limits(principal.plan)
        now = self._clock()
        admitted = self._admitted.setdefault(principal.id, deque())
        while admitted and admitted[0] <= now - WINDOW_SECONDS:
            admitted.popleft()
        if len(admitted) >= limits.requests_per_minute:
            retry_after = math.ceil(admitted[0] + WINDOW_SECONDS - now)
            raise RateLimited(
                f"More than {limits.requests_per_minute} requests in a minute for this key; retry in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )
        running = self._running.get(principal.id, 0)
        if running >= limits.concurrent_generations:
            raise RateLimited(
                f"This key already has {running} generations running, its limit.",
                headers={"Retry-After": str(BUSY_RETRY_SECONDS)},
            )
        admitted.append(now)
        self._running[principal.id] = running + 1
        try:
            yield
        finally:
            self._running[principal.id] -= 1
            if not self._running[principal.id]:
                del self._running[principal.id]

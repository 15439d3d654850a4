"""Per-key admission: requests in any minute and generations at once, refused with Retry-After."""

from __future__ import annotations

import pytest

from frontend.api.errors import RateLimited
from frontend.auth.credentials import Principal
from frontend.rate_limits import Limits, RateLimiter
from frontend.store.repository import Plan

KEY = Principal("key_a", frozenset(), Plan("studio"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_beyond_the_minute_limit_wait_for_the_oldest_to_leave_the_window() -> None:
    clock = Clock()
    limiter = RateLimiter(Limits(requests_per_minute=2, concurrent_generations=5), clock)
    for _ in range(2):
        with limiter.admit(KEY):
            clock.now += 10
    with pytest.raises(RateLimited) as refused, limiter.admit(KEY):
        pass
    assert refused.value.headers == {"Retry-After": "40"}  # the first request leaves the window at 1060
    clock.now = 1060.0
    with limiter.admit(KEY):
        pass


def test_generations_beyond_the_concurrency_limit_are_refused_until_one_ends() -> None:
    limiter = RateLimiter(Limits(requests_per_minute=100, concurrent_generations=1), Clock())
    with limiter.admit(KEY):
        with pytest.raises(RateLimited) as refused, limiter.admit(KEY):
            pass
        assert refused.value.headers == {"Retry-After": "1"}
        other_key = Principal("key_b", frozenset(), Plan("studio"))
        with limiter.admit(other_key):
            pass
    with limiter.admit(KEY):
        pass


def test_a_plans_own_limits_replace_the_defaults() -> None:
    limiter = RateLimiter(Limits(60, 4))
    assert limiter.limits(Plan("tight", requests_per_minute=2)) == Limits(2, 4)
    assert limiter.limits(Plan("studio")) == Limits(60, 4)

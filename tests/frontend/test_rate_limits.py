"""Per-key admission, counted in the store: requests in any minute and generations at once, refused
with Retry-After, and enforced together by every frontend sharing one store; sign-in attempts per
address and username; rows deleted once their window has passed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from frontend.auth.credentials import Principal
from frontend.errors import RateLimited
from frontend.rate_limits import LEASE_MARGIN_SECONDS, USERNAME_ADDRESSES, WINDOW_SECONDS, Limits, RateLimiter
from frontend.store import Store, connect
from frontend.store.plans import Plan
from frontend.store.schema import Transaction

KEY = Principal("key_a", frozenset(), Plan("studio"))
REQUEST_TIMEOUT = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(store_location: str) -> Iterator[Store]:
    opened = asyncio.run(connect(store_location))
    yield opened
    opened.close()


async def admitted(limiter: RateLimiter, principal: Principal = KEY) -> None:
    async with limiter.admit(principal):
        pass


def test_requests_beyond_the_minute_limit_wait_for_the_oldest_to_leave_the_window(store: Store) -> None:
    clock = Clock()
    limiter = RateLimiter(store, Limits(requests_per_minute=2, concurrent_generations=5), REQUEST_TIMEOUT, clock)

    async def scenario() -> None:
        for _ in range(2):
            async with limiter.admit(KEY):
                clock.now += 10
        with pytest.raises(RateLimited) as refused:
            await admitted(limiter)
        assert refused.value.retry_after == 40  # the first request leaves the window at 1060
        clock.now = 1060.0
        await admitted(limiter)

    asyncio.run(scenario())


def test_generations_beyond_the_concurrency_limit_are_refused_until_one_ends(store: Store) -> None:
    limiter = RateLimiter(store, Limits(requests_per_minute=100, concurrent_generations=1), REQUEST_TIMEOUT, Clock())

    async def scenario() -> None:
        async with limiter.admit(KEY):
            with pytest.raises(RateLimited) as refused:
                await admitted(limiter)
            assert refused.value.retry_after == 1
            await admitted(limiter, Principal("key_b", frozenset(), Plan("studio")))
        await admitted(limiter)

    asyncio.run(scenario())


def test_a_slot_left_by_a_dead_replica_frees_after_the_request_deadline(store: Store) -> None:
    clock = Clock()
    limiter = RateLimiter(store, Limits(requests_per_minute=100, concurrent_generations=1), REQUEST_TIMEOUT, clock)

    async def scenario() -> None:
        # A replica that dies mid-request never leaves the context: its lease is never released.
        dying = contextlib.AsyncExitStack()
        await dying.enter_async_context(limiter.admit(KEY))
        clock.now += REQUEST_TIMEOUT
        with pytest.raises(RateLimited):
            await admitted(limiter)
        clock.now += LEASE_MARGIN_SECONDS
        await admitted(limiter)

    asyncio.run(scenario())


def test_replicas_sharing_a_store_admit_exactly_the_limit_together(store_location: str) -> None:
    """Two frontends (two stores, each with its own connections) on one database, 24 requests at once:
    the plan's 5 requests a minute are admitted, not 5 per frontend."""
    stores = [asyncio.run(connect(store_location)) for _ in range(2)]
    limiters = [RateLimiter(store, Limits(5, 100), REQUEST_TIMEOUT) for store in stores]

    async def attempt(limiter: RateLimiter) -> bool:
        try:
            await admitted(limiter)
        except RateLimited:
            return False
        return True

    async def burst() -> list[bool]:
        return await asyncio.gather(*(attempt(limiters[i % 2]) for i in range(24)))

    try:
        assert sum(asyncio.run(burst())) == 5
    finally:
        for store in stores:
            store.close()


def test_a_plans_own_limits_replace_the_defaults(store: Store) -> None:
    limiter = RateLimiter(store, Limits(60, 4), REQUEST_TIMEOUT)
    assert limiter.limits(Plan("tight", requests_per_minute=2)) == Limits(2, 4)
    assert limiter.limits(Plan("studio")) == Limits(60, 4)


def test_sign_ins_from_one_address_lock_out_that_address_only(store: Store) -> None:
    """Per username from one address, then per address whatever the username: a guesser locks
    itself out, never the username's owner elsewhere."""
    limiter = RateLimiter(store, Limits(60, 4), REQUEST_TIMEOUT, Clock())

    async def scenario() -> None:
        for _ in range(2):
            await limiter.count_sign_in("alice", "192.0.2.1", per_username=2, per_address=3)
        with pytest.raises(RateLimited, match="for this username"):
            await limiter.count_sign_in("alice", "192.0.2.1", per_username=2, per_address=3)
        await limiter.count_sign_in("alice", "192.0.2.2", per_username=2, per_address=3)
        with pytest.raises(RateLimited, match="from this address") as refused:
            await limiter.count_sign_in("bob", "192.0.2.1", per_username=2, per_address=3)
        assert refused.value.retry_after == 60

    asyncio.run(scenario())


def test_a_username_guessed_from_many_addresses_is_limited_too(store: Store) -> None:
    limiter = RateLimiter(store, Limits(60, 4), REQUEST_TIMEOUT, Clock())

    async def scenario() -> None:
        for address in range(USERNAME_ADDRESSES):
            await limiter.count_sign_in("alice", f"192.0.2.{address}", per_username=1, per_address=30)
        with pytest.raises(RateLimited, match="for this username"):
            await limiter.count_sign_in("alice", "198.51.100.1", per_username=1, per_address=30)

    asyncio.run(scenario())


async def admission_rows(store: Store) -> tuple[list[str], list[str]]:
    """The principals of the admission rows, and of the principal rows, sorted."""

    def read(tx: Transaction) -> tuple[list[str], list[str]]:
        admissions = tx.fetchall("SELECT principal FROM rate_limit_admissions ORDER BY principal")
        principals = tx.fetchall("SELECT principal FROM rate_limit_principals ORDER BY principal")
        return [p for (p,) in admissions], [p for (p,) in principals]

    return await store.database.transact(read)


def test_rows_are_deleted_once_their_window_has_passed_whoever_they_counted(store: Store) -> None:
    """Keys', sign-ins' and addresses' rows alike; a generation still holding its lease keeps its row."""
    clock = Clock()
    limiter = RateLimiter(store, Limits(100, 100), REQUEST_TIMEOUT, clock)
    counted = ["key_a", "key_running", "sign-in-address:192.0.2.1", "sign-in-pair:192.0.2.1/ghost", "sign-in:ghost"]

    async def scenario() -> None:
        await admitted(limiter)
        async with limiter.admit(Principal("key_running", frozenset(), Plan("studio"))):
            await limiter.count_sign_in("ghost", "192.0.2.1", per_username=10, per_address=30)
            assert await admission_rows(store) == (counted, counted)
            clock.now += WINDOW_SECONDS + 1
            await admitted(limiter, Principal("key_b", frozenset(), Plan("studio")))
            assert await admission_rows(store) == (["key_b", "key_running"], ["key_b"])

    asyncio.run(scenario())

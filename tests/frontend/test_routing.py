"""The routing table and heartbeats in the store (both dialects): what lets several frontends that
share one store converge on a rollout, whichever of them ran it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from frontend.store import Store, connect
from frontend.store.heartbeats import Heartbeat
from frontend.store.routes import Route


@pytest.fixture
def store(store_location: str) -> Iterator[Store]:
    opened = asyncio.run(connect(store_location))
    yield opened
    opened.close()


def test_a_route_changes_only_from_the_generation_it_was_read_at(store: Store) -> None:
    first = Route("flux-schnell", stable_version=1, generation=1)
    assert asyncio.run(store.routes.replace(first))
    assert not asyncio.run(store.routes.replace(first))  # a second frontend writing the first row loses

    rollout = Route("flux-schnell", stable_version=2, previous_version=1, generation=2)
    concurrent = Route("flux-schnell", stable_version=1, canary_version=3, canary_percent=10.0, generation=2)
    assert asyncio.run(store.routes.replace(rollout))
    assert not asyncio.run(store.routes.replace(concurrent))  # read generation 1 too: refused
    assert asyncio.run(store.routes.all()) == {"flux-schnell": rollout}


def test_heartbeats_show_the_frontends_still_running(store: Store) -> None:
    now = time.time()
    serving = {"flux-schnell": {"stable_version": 2, "generation": 2}}
    asyncio.run(store.heartbeats.beat(Heartbeat("a", "10.0.0.1:8000", serving, {"flux-schnell@1": 1}, now)))
    asyncio.run(store.heartbeats.beat(Heartbeat("b", "10.0.0.2:8000", serving, {}, now - 60)))
    # a's next beat replaces its first
    asyncio.run(store.heartbeats.beat(Heartbeat("a", "10.0.0.1:8000", serving, {}, now)))

    live = asyncio.run(store.heartbeats.since(now - 5))
    assert [(beat.frontend, beat.in_flight, beat.serving) for beat in live] == [("a", {}, serving)]
    asyncio.run(store.heartbeats.forget("a"))
    assert asyncio.run(store.heartbeats.since(0)) == [Heartbeat("b", "10.0.0.2:8000", serving, {}, now - 60)]

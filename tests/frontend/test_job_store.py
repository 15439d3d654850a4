"""The job queue in both store dialects: concurrent workers (several stores on one database, as
replicas) never claim one job twice, a lapsed lease hands the job on, a stale worker's writes change
nothing, a cancelled queued job is never claimed, a result is consumed once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest

from frontend.store import Store, connect
from frontend.store.jobs import ClaimedJob, NewJob

LEASE = 30.0


@pytest.fixture
def stores(store_location: str) -> Iterator[list[Store]]:
    """Three stores on one database: three frontends' connections."""
    opened = [asyncio.run(connect(store_location)) for _ in range(3)]
    yield opened
    for store in opened:
        store.close()


def new_job(index: int, created_at: float = 1000.0, principal: str = "key_a") -> NewJob:
    return NewJob(f"job_{index:032x}", principal, "flux-schnell", "flux-schnell", 0, created_at + index, 4, "sealed")


def test_workers_on_several_stores_claim_every_job_exactly_once(stores: list[Store]) -> None:
    async def scenario() -> list[str]:
        for index in range(30):
            assert await stores[0].jobs.add(new_job(index), max_unfinished=100)

        async def drain(store: Store, worker: int) -> list[str]:
            taken = []
            while claimed := await store.jobs.claim(["flux-schnell"], f"w{worker}", 2000.0, 2000.0 + LEASE, 3):
                taken.append(claimed.record.id)
            return taken

        taken = await asyncio.gather(*(drain(store, i) for i, store in enumerate(stores) for _ in range(2)))
        return [job_id for worker in taken for job_id in worker]

    claimed = asyncio.run(scenario())
    assert len(claimed) == 30 and set(Counter(claimed).values()) == {1}


def test_a_lapsed_lease_hands_the_job_on_and_the_stale_worker_changes_nothing(stores: list[Store]) -> None:
    async def scenario() -> None:
        jobs = stores[0].jobs
        await jobs.add(new_job(1), max_unfinished=100)
        first = await jobs.claim(["flux-schnell"], "first", 2000.0, 2000.0 + LEASE, 3)
        assert first is not None and await jobs.claim(["flux-schnell"], "x", 2001.0, 2001.0 + LEASE, 3) is None
        second = await stores[1].jobs.claim(["flux-schnell"], "second", 2000.0 + LEASE, 2000.0 + 2 * LEASE, 3)
        assert second is not None and second.record.attempts == 2
        assert await jobs.renew(first.record.id, "first", 3000.0, 1, 4) is None
        assert not await jobs.finish(first.record.id, "first", "succeeded", 2040.0, (4, 4), "sealed result", 9999.0)
        assert await stores[1].jobs.finish(
            second.record.id, "second", "succeeded", 2041.0, (4, 4), "sealed result", 9999.0
        )
        record = await jobs.get(first.record.id, "key_a", 2042.0)
        assert record is not None and record.status == "succeeded" and record.ended_at == 2041.0

    asyncio.run(scenario())


def test_a_job_out_of_attempts_fails_and_a_cancelled_queued_job_is_never_claimed(stores: list[Store]) -> None:
    async def scenario() -> None:
        jobs = stores[0].jobs
        await jobs.add(new_job(1), max_unfinished=100)
        await jobs.add(new_job(2), max_unfinished=100)
        assert await jobs.cancel(new_job(2).id, "key_a", 1500.0)
        claimed: ClaimedJob | None = None
        for attempt in range(2):
            now = 2000.0 + attempt * LEASE
            claimed = await jobs.claim(["flux-schnell"], f"w{attempt}", now, now + LEASE, 2)
            assert claimed is not None and claimed.record.id == new_job(1).id
        assert await jobs.claim(["flux-schnell"], "w", 2000.0 + 2 * LEASE, 3000.0, 2) is None
        assert await jobs.sweep(2000.0 + 2 * LEASE, 10.0, 2, 0.0, '{"error": {}}')
        statuses = [(await jobs.get(new_job(i).id, None, 2100.0)) for i in (1, 2)]
        assert [record.status for record in statuses if record] == ["failed", "cancelled"]

    asyncio.run(scenario())


def test_a_result_is_consumed_once_and_another_principal_never_sees_the_job(stores: list[Store]) -> None:
    async def scenario() -> None:
        jobs = stores[0].jobs
        await jobs.add(new_job(1), max_unfinished=100)
        claimed = await jobs.claim(["flux-schnell"], "w", 2000.0, 2000.0 + LEASE, 3)
        assert claimed is not None
        await jobs.finish(claimed.record.id, "w", "succeeded", 2001.0, (4, 4), "sealed result", 2001.0 + 3600)
        assert await jobs.get(claimed.record.id, "key_b", 2002.0) is None
        assert await jobs.consume(claimed.record.id, "key_b", 2002.0) is None
        consumed = await asyncio.gather(*(store.jobs.consume(claimed.record.id, "key_a", 2002.0) for store in stores))
        assert [c[1] for c in consumed if c] == ["sealed result"]
        assert await jobs.get(claimed.record.id, "key_a", 2002.0) is None

    asyncio.run(scenario())


def test_a_principal_queues_at_most_its_limit_and_a_result_past_its_ttl_reads_expired(stores: list[Store]) -> None:
    async def scenario() -> None:
        jobs = stores[0].jobs
        assert [await jobs.add(new_job(i), max_unfinished=2) for i in range(3)] == [True, True, False]
        assert await jobs.add(new_job(3, principal="key_b"), max_unfinished=2)
        claimed = await jobs.claim(["flux-schnell"], "w", 2000.0, 2000.0 + LEASE, 3)
        assert claimed is not None
        await jobs.finish(claimed.record.id, "w", "succeeded", 2001.0, (4, 4), "sealed result", 2010.0)
        record = await jobs.get(claimed.record.id, "key_a", 2010.0)
        assert record is not None and record.status == "expired"
        assert await jobs.result(claimed.record.id, "key_a", 2010.0) is None

    asyncio.run(scenario())

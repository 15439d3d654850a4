"""A model's running slots: one key's share, the order of the waiters, and a waiter that gives up."""

from __future__ import annotations

import asyncio
import contextlib

from frontend.admission import Admission


def admission() -> Admission:
    """Two running slots per model, one per key, two waiting."""
    return Admission(running_per_model=2, queued_per_model=2, running_per_key=1, request_timeout=60)


async def hold(gate: Admission, key: str, started: list[str], release: asyncio.Event) -> None:
    async with gate.slot("m", key):
        started.append(key)
        await release.wait()


async def cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_a_key_at_its_share_waits_while_another_keys_request_passes_it() -> None:
    async def scenario() -> None:
        gate, started, release = admission(), [], asyncio.Event()
        tasks = [asyncio.create_task(hold(gate, key, started, release)) for key in ("a", "a", "b")]
        await asyncio.sleep(0)  # each task runs to its first wait
        assert started == ["a", "b"] and gate.load() == {"m": {"running": 2, "queued": 1}}
        release.set()
        await asyncio.gather(*tasks)
        assert started == ["a", "b", "a"] and gate.load() == {"m": {"running": 0, "queued": 0}}

    asyncio.run(scenario())


def test_a_waiter_that_gives_up_leaves_neither_its_place_nor_a_slot_behind() -> None:
    async def scenario() -> None:
        gate, started = admission(), []
        first_ends, never = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(hold(gate, "a", started, first_ends))
        waiting = asyncio.create_task(hold(gate, "a", started, never))
        await asyncio.sleep(0)
        await cancelled(waiting)
        assert gate.load() == {"m": {"running": 1, "queued": 0}}

        granted = asyncio.create_task(hold(gate, "a", started, never))
        await asyncio.sleep(0)
        first_ends.set()
        await asyncio.sleep(0)  # the first ends and hands its slot to `granted`, which has not run since
        assert first.done() and started == ["a"]
        await cancelled(granted)
        assert started == ["a"] and gate.load() == {"m": {"running": 0, "queued": 0}}

    asyncio.run(scenario())


async def settle() -> None:
    """Until the tasks woken have run: the one ending hands its slot on, the one granted starts."""
    for _ in range(3):
        await asyncio.sleep(0)


async def hold_background(gate: Admission, key: str, started: list[str], release: asyncio.Event) -> None:
    async with gate.slot("m", key, background=True):
        started.append(key)
        await release.wait()


def test_a_job_takes_a_slot_only_once_no_interactive_request_waits() -> None:
    async def scenario() -> None:
        gate, started = admission(), []
        first_ends, second_ends, never = asyncio.Event(), asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(hold(gate, "a", started, first_ends)),
            asyncio.create_task(hold(gate, "b", started, second_ends)),
            asyncio.create_task(hold_background(gate, "job", started, never)),
            asyncio.create_task(hold(gate, "c", started, never)),
        ]
        await asyncio.sleep(0)
        assert started == ["a", "b"] and not gate.has_room("m")
        first_ends.set()
        await settle()
        assert started == ["a", "b", "c"]  # the request that came after the job passes it
        second_ends.set()
        await settle()
        assert started == ["a", "b", "c", "job"] and gate.load() == {"m": {"running": 2, "queued": 0}}
        for task in tasks:
            await cancelled(task)
        assert gate.has_room("m") and gate.load() == {"m": {"running": 0, "queued": 0}}

    asyncio.run(scenario())


def test_jobs_take_no_place_in_the_queue_of_interactive_requests() -> None:
    async def scenario() -> None:
        gate, started, never = admission(), [], asyncio.Event()
        jobs = [asyncio.create_task(hold_background(gate, f"job{i}", started, never)) for i in range(6)]
        requests = [asyncio.create_task(hold(gate, key, started, never)) for key in ("a", "b", "c", "d")]
        await asyncio.sleep(0)
        # Four requests admitted (the bound: two running and two waiting) although jobs hold the slots.
        assert started == ["job0", "job1"] and gate.load() == {"m": {"running": 2, "queued": 4}}
        for task in [*jobs, *requests]:
            await cancelled(task)

    asyncio.run(scenario())

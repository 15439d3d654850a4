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

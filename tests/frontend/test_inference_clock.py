"""The seconds a generation waits on Triton (`InferenceClock`), which `Server-Timing` reports as
`inference` and energy is billed from: a part of the generation's own time, calls made together
(the two text encoders) counted once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from frontend import accounting
from frontend.accounting import InferenceClock


def test_time_with_calls_outstanding_together_counts_once(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 0.0
    monkeypatch.setattr(accounting, "time", SimpleNamespace(perf_counter=lambda: now))
    clock = InferenceClock()

    async def call(sent: asyncio.Event, answered: asyncio.Event) -> None:
        with clock.waiting():
            sent.set()
            await answered.wait()

    async def generation() -> None:
        nonlocal now
        sent, answered = [asyncio.Event() for _ in range(3)], [asyncio.Event() for _ in range(3)]
        first = asyncio.create_task(call(sent[0], answered[0]))
        await sent[0].wait()  # the first text encoder, at 0 s
        now = 1.0
        second = asyncio.create_task(call(sent[1], answered[1]))
        await sent[1].wait()  # the second, while the first runs
        now = 3.0
        answered[0].set()
        await first
        now = 4.0
        answered[1].set()
        await second  # 4 s with a call outstanding, though the calls took 3 s each
        now = 10.0  # the frontend's own work: not Triton's
        third = asyncio.create_task(call(sent[2], answered[2]))
        await sent[2].wait()
        now = 12.0
        answered[2].set()
        await third

    asyncio.run(generation())
    assert clock.seconds == 6.0

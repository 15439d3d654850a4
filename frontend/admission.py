"""Server-wide admission: per model, a bounded queue in front of a fixed number of running
generations; per request, a deadline and cancellation when the client goes away.

Per-key limits are `rate_limits.py`; these protect the server whoever is calling, so a burst is
refused at once with a 429 instead of piling up behind Triton until every client times out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from frontend.api.errors import ClientClosedRequest, DeadlineExceeded, QueueFull

T = TypeVar("T")

QUEUE_RETRY_SECONDS = 2
"""Retry-After of a full queue: a few generations' time, when a place is likely free again."""


@dataclass
class ModelQueue:
    """One model's generations: `running` hold a slot, the rest of `admitted` wait for one."""

    slots: asyncio.Semaphore
    capacity: int
    admitted: int = 0
    running: int = 0


class Admission:
    def __init__(self, running_per_model: int, queued_per_model: int, request_timeout: float) -> None:
        self.running_per_model = running_per_model
        self.queued_per_model = queued_per_model
        self.request_timeout = request_timeout
        self._queues: dict[str, ModelQueue] = {}

    @contextlib.asynccontextmanager
    async def slot(self, model: str) -> AsyncIterator[None]:
        """Wait in the model's queue for a running slot and hold it, or raise QueueFull at once."""
        queue = self._queues.get(model)
        if queue is None:
            capacity = self.running_per_model + self.queued_per_model
            queue = self._queues[model] = ModelQueue(asyncio.Semaphore(self.running_per_model), capacity)
        if queue.admitted >= queue.capacity:
            raise QueueFull(
                f"The server is busy: {model} has {queue.running} generations running and "
                f"{queue.admitted - queue.running} waiting, its limit. Retry in {QUEUE_RETRY_SECONDS} s.",
                headers={"Retry-After": str(QUEUE_RETRY_SECONDS)},
            )
        queue.admitted += 1
        try:
            async with queue.slots:
                queue.running += 1
                try:
                    yield
                finally:
                    queue.running -= 1
        finally:
            queue.admitted -= 1

    def load(self) -> dict[str, dict[str, int]]:
        """Per model, generations running and waiting now (what `/readyz` reports)."""
        return {
            model: {"running": queue.running, "queued": queue.admitted - queue.running}
            for model, queue in sorted(self._queues.items())
        }

    async def run(self, request: Request, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` under the request's deadline, cancelled as soon as the client disconnects, so
        its remaining steps never run and its slot frees at once."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.create_task(_disconnected(request))
        try:
            done, _ = await asyncio.wait(
                {task, watcher}, timeout=self.request_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                return task.result()
        finally:
            # Also when this request itself is cancelled (a shutdown past its grace period).
            watcher.cancel()
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if watcher in done:
            raise ClientClosedRequest("The client closed the connection; the generation was stopped.")
        raise DeadlineExceeded(
            f"The request took longer than the server's {self.request_timeout:g} s deadline and was stopped."
        )


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone; the body has been read, so the only message left is the
    disconnect (uvicorn also sends it once the response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass

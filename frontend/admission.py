"""Server-wide admission: per model, a bounded queue in front of a fixed number of running
generations, of which one key holds at most a share; per request, a deadline and cancellation when
the client goes away.

Per-key limits are `rate_limits.py`; these protect the server whoever is calling, so a burst is
refused at once with a 429 instead of piling up behind Triton until every client times out, and a
few keys cannot take every running slot of a model: a key's generations beyond its share wait while
other keys' pass them. Asynchronous jobs (frontend/jobs.py) wait as `background` generations: they
take a slot only when no interactive request waits for one, and do not count against the queue's bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from frontend.errors import ClientClosedRequest, DeadlineExceeded, QueueFull

T = TypeVar("T")

QUEUE_RETRY_SECONDS = 2
"""Retry-After of a full queue: a few generations' time, when a place is likely free again."""


@dataclass
class ModelQueue:
    """One model's generations: `running` hold a slot (counted per key), the rest of `admitted` wait
    in `waiting`, in order of arrival; background generations (jobs) wait in `background`."""

    capacity: int
    admitted: int = 0
    running: Counter[str] = field(default_factory=Counter)
    waiting: list[tuple[str, asyncio.Future[None]]] = field(default_factory=list)
    background: list[tuple[str, asyncio.Future[None]]] = field(default_factory=list)


class Admission:
    def __init__(
        self, running_per_model: int, queued_per_model: int, running_per_key: int, request_timeout: float
    ) -> None:
        self.running_per_model = running_per_model
        self.queued_per_model = queued_per_model
        self.running_per_key = running_per_key
        self.request_timeout = request_timeout
        self._queues: dict[str, ModelQueue] = {}
        self.on_release: Callable[[], None] | None = None
        """Called whenever a slot frees: wakes the job workers (api/job_worker.py)."""

    @contextlib.asynccontextmanager
    async def slot(self, model: str, key: str, background: bool = False) -> AsyncIterator[None]:
        """Wait in the model's queue for a running slot and hold it, or raise QueueFull at once.
        `key`: the key or account asking, which holds at most `running_per_key` of the slots.
        `background`: a job's, which waits until a slot is free with no interactive request waiting
        (the workers bound how many wait so, not the queue)."""
        queue = self._queue(model)
        if background:
            await self._acquire(queue, key, queue.background)
            try:
                yield
            finally:
                self._release(queue, key)
            return
        if queue.admitted >= queue.capacity:
            running = queue.running.total()
            raise QueueFull(
                f"The server is busy: {model} has {running} generations running and "
                f"{len(queue.waiting)} waiting, its limit. Retry in {QUEUE_RETRY_SECONDS} s.",
                retry_after=QUEUE_RETRY_SECONDS,
            )
        queue.admitted += 1
        try:
            await self._acquire(queue, key, queue.waiting)
            try:
                yield
            finally:
                self._release(queue, key)
        finally:
            queue.admitted -= 1

    def _queue(self, model: str) -> ModelQueue:
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = ModelQueue(self.running_per_model + self.queued_per_model)
        return queue

    def has_room(self, model: str) -> bool:
        """Whether a background generation of `model` would run at once: a slot free, no request waiting."""
        queue = self._queues.get(model)
        if queue is None:  # none of its generations seen yet: left out of `load` until one is
            return True
        return queue.running.total() < self.running_per_model and not queue.waiting and not queue.background

    async def _acquire(self, queue: ModelQueue, key: str, line: list[tuple[str, asyncio.Future[None]]]) -> None:
        granted = asyncio.get_running_loop().create_future()
        line.append((key, granted))
        self._dispatch(queue)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.cancelled():
                line.remove((key, granted))
            else:  # granted, then cancelled before it could run: the slot goes to the next
                self._release(queue, key)
            raise

    def _release(self, queue: ModelQueue, key: str) -> None:
        queue.running[key] -= 1
        if not queue.running[key]:
            del queue.running[key]
        self._dispatch(queue)
        if self.on_release is not None:
            self.on_release()

    def _dispatch(self, queue: ModelQueue) -> None:
        """Give free slots to the waiters in order of arrival, passing over those whose key already
        holds its share (they run once one of the key's own generations ends); to background ones
        only once no interactive request waits."""
        for line in (queue.waiting, queue.background):
            if line is queue.background and queue.waiting:
                return
            for key, granted in list(line):
                if queue.running.total() >= self.running_per_model:
                    return
                if not granted.cancelled() and queue.running[key] < self.running_per_key:
                    line.remove((key, granted))
                    queue.running[key] += 1
                    granted.set_result(None)

    def load(self) -> dict[str, dict[str, int]]:
        """Per model, generations running (jobs' included) and requests waiting now (what `/readyz` reports)."""
        return {
            model: {"running": queue.running.total(), "queued": len(queue.waiting)}
            for model, queue in sorted(self._queues.items())
        }

    async def run(self, work: Coroutine[Any, Any, T], client_gone: Coroutine[Any, Any, None]) -> T:
        """Run `work` under the request's deadline, cancelled as soon as `client_gone` returns (the
        client disconnected), so its remaining steps never run and its slot frees at once."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.create_task(client_gone)
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

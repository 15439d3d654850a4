"""Asynchronous jobs: a generation submitted now and run later, by any frontend sharing the store.

A job is queued (store/jobs.py) once its request passed every check a synchronous one passes; a
worker of any frontend (api/job_worker.py) claims it when its model has a free running slot and no
interactive request waits, under a lease it renews while the job runs. A frontend that dies leaves
its job to another worker once the lease lapses, up to `job_attempts` starts, then the job fails.

What is kept, and how long: the request (its prompt) sealed (frontend/sealing.py) until the job
ends, then deleted; the result sealed until its owner fetches it with `?consume=true`, or for
`job_result_ttl` seconds (then the job is `expired`); an ended job's record for a day. The key that
seals is not in the store, so a copy of the database reveals neither prompts nor images.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from frontend.errors import JobNotFound, RateLimited
from frontend.sealing import Sealer
from frontend.settings import Settings
from frontend.store import Store
from frontend.store.jobs import ClaimedJob, JobRecord, NewJob

BATCH_PRIORITY, ASYNC_PRIORITY = 1, 0
"""`:batch` jobs run after every other queued job."""
RECORD_SECONDS = 24 * 3600.0
"""How long an ended job's record (status, times, error; never its request or result) is kept."""
SWEEP_SECONDS = 10.0
"""How often one frontend sweeps the queue (expired results, jobs whose worker died, old records)."""
MAX_RENEW_SECONDS = 1.0
"""A running job's lease is renewed (and its progress and cancellation read) at least this often."""
WORKER_GONE = (
    '{"error": {"message": "The job\'s worker stopped before finishing it, on every attempt.", '
    '"type": "server_error", "param": null, "code": "SERVER_5000"}}'
)
"""The error of a job that ran out of attempts (the envelope frontend/api/errors.py writes)."""


@dataclass
class RunningJob:
    """A job this frontend's worker runs: its task, and why it was stopped, if it was."""

    task: asyncio.Task[bytes]
    stopped: str | None = None
    """"cancelled" (its owner asked), "lost" (its lease lapsed and another worker took it)."""


class JobQueue:
    def __init__(
        self, store: Store, sealer: Sealer, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self._sealer = sealer
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._running: dict[str, RunningJob] = {}

    @property
    def renew_seconds(self) -> float:
        return min(MAX_RENEW_SECONDS, self.settings.job_lease / 3)

    async def submit(
        self,
        principal: str,
        model: str,
        pipeline: str,
        batch: bool,
        steps: int,
        request: bytes,
    ) -> JobRecord:
        """Queue a checked request (its JSON), or raise RateLimited when the principal has
        `jobs_per_key` jobs queued or running."""
        now = self._clock()
        # Ids grow with time (newest first is by id), and their random part makes them unguessable.
        job_id = f"job_{int(now * 1000):012x}{secrets.token_hex(10)}"
        sealed = self._sealer.seal(request, f"job:{job_id}:request")
        priority = BATCH_PRIORITY if batch else ASYNC_PRIORITY
        job = NewJob(job_id, principal, model, pipeline, priority, now, steps, sealed)
        if not await self.store.jobs.add(job, self.settings.jobs_per_key):
            raise RateLimited(
                f"This key already has {self.settings.jobs_per_key} jobs queued or running, its limit.", retry_after=10
            )
        self._wakeup.set()
        return await self.get(job_id, principal)

    async def get(self, job_id: str, principal: str | None) -> JobRecord:
        """The job, if it is `principal`'s (None: anyone's, for the operator); else JobNotFound."""
        record = await self.store.jobs.get(job_id, principal, self._clock())
        if record is None:
            raise _not_found(job_id)
        return record

    async def result(self, record: JobRecord) -> bytes | None:
        """The result of a succeeded job (the synchronous response's JSON), None once gone."""
        sealed = await self.store.jobs.result(record.id, record.principal, self._clock())
        return None if sealed is None else self._unseal(record.id, "result", sealed)

    async def consume(self, job_id: str, principal: str | None) -> tuple[JobRecord, bytes]:
        """The succeeded job and its result, deleted as they are read; JobNotFound when there is none."""
        consumed = await self.store.jobs.consume(job_id, principal, self._clock())
        if consumed is None:
            raise _not_found(job_id)
        record, sealed = consumed
        return record, self._unseal(job_id, "result", sealed)

    async def page(self, principal: str | None, before: str | None, limit: int) -> list[JobRecord]:
        return await self.store.jobs.page(principal, before, limit, self._clock())

    async def cancel(self, job_id: str, principal: str | None) -> JobRecord:
        """Cancel the job: a queued one never runs; a running one stops before its next step (at
        once on this frontend, at its next lease renewal on another)."""
        if await self.store.jobs.cancel(job_id, principal, self._clock()):
            self.stop(job_id, "cancelled")
        return await self.get(job_id, principal)

    # The workers' side (api/job_worker.py).

    async def wait_for_work(self) -> None:
        """Until a job is submitted here or a running slot frees, or a lease renewal's time has passed
        (a job submitted to another frontend, a lease lapsed)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), self.renew_seconds)
        self._wakeup.clear()

    def wake(self) -> None:
        self._wakeup.set()

    async def claim(self, pipelines: list[str]) -> ClaimedJob | None:
        now = self._clock()
        claim = secrets.token_hex(8)
        return await self.store.jobs.claim(
            pipelines, claim, now, now + self.settings.job_lease, self.settings.job_attempts
        )

    def request(self, claimed: ClaimedJob) -> bytes:
        return self._unseal(claimed.record.id, "request", claimed.request)

    def sealed_result(self, job_id: str, result: bytes) -> str:
        return self._sealer.seal(result, f"job:{job_id}:result")

    @contextlib.contextmanager
    def running(self, job_id: str, task: asyncio.Task[bytes]) -> Iterator[RunningJob]:
        """`task` runs the job here: `stop` reaches it while the block lasts."""
        running = self._running[job_id] = RunningJob(task)
        try:
            yield running
        finally:
            del self._running[job_id]

    def stop(self, job_id: str, reason: str) -> None:
        if (running := self._running.get(job_id)) is not None and running.stopped is None:
            running.stopped = reason
            running.task.cancel()

    async def renew(self, claimed: ClaimedJob, step: int, steps: int) -> None:
        """Extend the lease and record the progress; stop the job if its owner cancelled it or the
        lease was lost."""
        now = self._clock()
        record = claimed.record
        steps = steps or record.steps  # before its first step, the steps the request asked for
        cancel = await self.store.jobs.renew(record.id, claimed.claim, now + self.settings.job_lease, step, steps)
        if cancel is None or cancel:
            self.stop(record.id, "lost" if cancel is None else "cancelled")

    async def sweep(self) -> None:
        now = self._clock()
        attempts = self.settings.job_attempts
        await self.store.jobs.sweep(now, SWEEP_SECONDS, attempts, now - RECORD_SECONDS, WORKER_GONE)

    def result_expires_at(self) -> float:
        return self._clock() + self.settings.job_result_ttl

    def now(self) -> float:
        return self._clock()

    def _unseal(self, job_id: str, part: str, sealed: str) -> bytes:
        return self._sealer.unseal(sealed, f"job:{job_id}:{part}")


def _not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"No job of yours has the id `{job_id}` (a consumed job is gone).", param="id")

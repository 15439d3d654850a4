"""The job workers every frontend runs (started in app.py's lifespan): each claims a queued job of a
model with room (frontend/jobs.py), runs it as a synchronous request runs (generation.py) as a
background generation of the model's admission, keeps its lease while it runs, and records how it
ended. One more task sweeps the queue.

The key or account is read again from the store when the job runs: a key revoked (or an account
disabled) since the submission fails its jobs with `AUTH_1001`, unrun and uncharged, since revoking
is how an operator stops a key's spending.
"""

from __future__ import annotations

import asyncio
import json
import logging

from frontend.api.errors import error_body
from frontend.api.generation import prepare_generation, run_generation
from frontend.api.jobs import job_object
from frontend.api.protocol import ImageRequest
from frontend.auth.scopes import IMAGES
from frontend.errors import APIError, ClientClosedRequest, DeadlineExceeded, InternalError, Unauthenticated
from frontend.jobs import BATCH_PRIORITY, SWEEP_SECONDS
from frontend.progress import Progress
from frontend.services import Services
from frontend.store.jobs import CANCELLED, FAILED, SUCCEEDED, ClaimedJob

log = logging.getLogger(__name__)


async def run_workers(services: Services) -> None:
    """`job_workers` workers and the sweep, until cancelled (a job running then goes back to the queue)."""
    services.admission.on_release = services.jobs.wake
    tasks = [asyncio.create_task(work(services)) for _ in range(services.settings.job_workers)]
    tasks.append(asyncio.create_task(sweep(services)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def work(services: Services) -> None:
    jobs = services.jobs
    while True:
        try:
            pipelines = [name for name in services.catalog.pipelines if services.admission.has_room(name)]
            claimed = await jobs.claim(pipelines)
        except Exception:
            log.exception("claiming a job failed; retrying")
            claimed = None
        if claimed is None:
            await jobs.wait_for_work()
            continue
        try:
            await run_job(services, claimed)
        except Exception:  # its request unreadable (another sealing key?): it fails once out of attempts
            log.exception("job %s could not be run", claimed.record.id)


async def run_job(services: Services, claimed: ClaimedJob) -> None:
    jobs, record = services.jobs, claimed.record
    progress = Progress()
    image_request = ImageRequest.model_validate_json(jobs.request(claimed))
    task = asyncio.create_task(execute(services, claimed, image_request, progress))
    with jobs.running(record.id, task) as running:
        keeper = asyncio.create_task(keep_lease(services, claimed, progress))
        result = error = None
        try:
            result = jobs.sealed_result(record.id, await task)
            status = SUCCEEDED
        except (asyncio.CancelledError, ClientClosedRequest):
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # this frontend is stopping
                await jobs.store.jobs.release(record.id, claimed.claim)
                raise asyncio.CancelledError from None
            if running.stopped == "lost":
                log.warning("job %s: its lease lapsed and another worker took it; stopped here", record.id)
                return
            status = CANCELLED
        except APIError as exc:
            status, error = FAILED, error_body(exc)
        except Exception as exc:
            log.exception("job %s failed", record.id)
            status, error = FAILED, error_body(InternalError(repr(exc)))
        finally:
            keeper.cancel()
    expires = jobs.result_expires_at() if status == SUCCEEDED else None
    encoded = None if error is None else json.dumps(error)
    progressed = (progress.step, progress.steps)
    if not await jobs.store.jobs.finish(
        record.id, claimed.claim, status, jobs.now(), progressed, result, expires, encoded
    ):
        log.warning("job %s ended %s after its lease was lost; another worker's outcome stands", record.id, status)
    elif image_request.webhook_url is not None:
        ended = job_object(await jobs.get(record.id, None))
        await services.webhooks.enqueue(
            record.principal, record.id, image_request.webhook_url, f"image.job.{status}", ended
        )


async def execute(services: Services, claimed: ClaimedJob, image_request: ImageRequest, progress: Progress) -> bytes:
    """Run the job's request for its owner as it stands now; the synchronous response's JSON."""
    record = claimed.record
    principal = await services.auth.principal(record.principal)
    if principal is None or IMAGES not in principal.scopes:
        raise Unauthenticated("The key or account that submitted this job was revoked or disabled before it ran.")
    async with services.ledger.record(principal, progress) as usage:
        usage.batch = record.priority == BATCH_PRIORITY
        try:
            async with asyncio.timeout(services.settings.request_timeout):
                prepared = await prepare_generation(services, image_request, usage)
                generated = await run_generation(services, prepared, usage, progress, background=True)
        except asyncio.CancelledError:  # recorded in the ledger as a request whose client went away
            raise ClientClosedRequest("The job was cancelled; it was stopped.") from None
        except TimeoutError:
            deadline = services.settings.request_timeout
            raise DeadlineExceeded(
                f"The job took longer than the server's {deadline:g} s deadline; it was stopped."
            ) from None
    return generated.response.model_dump_json(exclude_none=True).encode()


async def keep_lease(services: Services, claimed: ClaimedJob, progress: Progress) -> None:
    while True:
        await asyncio.sleep(services.jobs.renew_seconds)
        try:
            await services.jobs.renew(claimed, progress.step, progress.steps)
        except Exception:
            log.exception("renewing job %s's lease failed; retrying", claimed.record.id)


async def sweep(services: Services) -> None:
    """The queue's sweep (by one frontend at a time) and, on every frontend, the jobs' metrics."""
    while True:
        try:
            await services.jobs.sweep()
            services.metrics.observe_jobs(*await services.jobs.store.jobs.counts(services.jobs.now()))
        except Exception:
            log.exception("sweeping the job queue failed; retrying")
        await asyncio.sleep(SWEEP_SECONDS)

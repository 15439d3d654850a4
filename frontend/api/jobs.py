"""Asynchronous jobs over HTTP (frontend/jobs.py): submitting from the image endpoints
(`Prefer: respond-async`, or a `:batch` model), and `/v1/images/jobs`: list, read (and consume),
cancel, and follow a job's status as Server-Sent Events.

A caller reaches only its own jobs (the key's, or the signed-in account's): another's id is a 404,
as one that never existed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from frontend.accounting import Usage
from frontend.api.generation import prepare_generation
from frontend.api.protocol import ImageRequest
from frontend.auth.credentials import Principal
from frontend.auth.scopes import IMAGES, STUDIO_ACCESS
from frontend.errors import InvalidParameter, JobNotFound
from frontend.services import Services
from frontend.store.jobs import ENDED, SUCCEEDED, JobRecord

JOBS_PATH = "/v1/images/jobs"
JOB_ID = re.compile(r"job_[0-9a-f]{32}")
DEFAULT_PAGE, MAX_PAGE = 20, 100
BATCH_SUFFIX = ":batch"
EVENT_SECONDS = 0.5
"""How often a job's event stream reads the job (from the store: any frontend may run it)."""


def deferred(request: Request, image_request: ImageRequest) -> bool:
    """Whether the request asks to be a job: `Prefer: respond-async` (RFC 7240), or a `:batch` model."""
    preferences = {
        token.split("=")[0].strip().lower()
        for header in request.headers.getlist("prefer")
        for token in re.split(r"[,;]", header)
    }
    if "respond-async" in preferences or (image_request.model or "").endswith(BATCH_SUFFIX):
        if image_request.stream:
            raise InvalidParameter(
                "A job answers at once and runs later, so it cannot stream: drop `stream`, and follow the "
                "job at GET /v1/images/jobs/{id}/events.",
                param="stream",
            )
        return True
    if image_request.webhook_url is not None:
        raise InvalidParameter(
            "`webhook_url` is a job's: send `Prefer: respond-async` (or use a `:batch` model).", param="webhook_url"
        )
    return False


async def submit_job(services: Services, image_request: ImageRequest, usage: Usage) -> Response:
    """Check the request as a synchronous one is checked, then queue it: `202 Accepted`, the job,
    and its `Location`. Nothing that would be refused is queued."""
    if image_request.stream:
        raise InvalidParameter("A job is not streamed: follow it at its `events` link instead.", param="stream")
    if image_request.webhook_url is not None:
        checked = await services.webhooks.check_url(usage.principal.id, image_request.webhook_url)
        image_request = image_request.model_copy(update={"webhook_url": checked})
    prepared = await prepare_generation(services, image_request, usage)
    # The submission returns no image and charges nothing: the job's own ledger row, written when it
    # runs, records its work and credits.
    usage.work = None
    model = image_request.model or services.catalog.config.default_model
    record = await services.jobs.submit(
        usage.principal.id,
        model,
        prepared.pipeline.name,
        model.endswith(BATCH_SUFFIX),
        prepared.job.steps,
        image_request.model_dump_json(exclude_none=True).encode(),
    )
    headers = {"Location": job_link(record.id), "Preference-Applied": "respond-async"}
    return JSONResponse(job_object(record), status_code=202, headers=headers)


def job_link(job_id: str) -> str:
    return f"{JOBS_PATH}/{job_id}"


def job_object(record: JobRecord) -> dict[str, Any]:
    """What a job's owner sees: never its request; its result is added by `get_job`."""
    link = job_link(record.id)
    job: dict[str, Any] = {
        "id": record.id,
        "object": "image.job",
        "status": record.status,
        "created": int(record.created_at),
        "model": record.model,
        "queue_position": record.queue_position,
        "progress": {"step": record.step, "steps": record.steps},
        "attempts": record.attempts,
        "links": {"self": link, "events": f"{link}/events", "cancel": f"{link}/cancel"},
    }
    if record.status == SUCCEEDED and record.result_expires_at is not None:
        job["expires_at"] = int(record.result_expires_at)
    if record.error is not None:
        job["error"] = json.loads(record.error)["error"]
    return job


async def caller(request: Request) -> Principal:
    return await Services.of(request).auth.authorize(request, IMAGES, STUDIO_ACCESS)


def job_id_of(request: Request) -> str:
    job_id: str = request.path_params["job_id"]
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(f"No job of yours has the id `{job_id}`.", param="id")
    return job_id


async def get_job(request: Request) -> Response:
    """The job; once succeeded, `result`: the synchronous response's body. `?consume=true` deletes the
    job and its result as they are returned, so a second read is a 404."""
    services, principal, job_id = Services.of(request), await caller(request), job_id_of(request)
    consume = request.query_params.get("consume", "false").lower()
    if consume not in ("true", "false"):
        raise InvalidParameter("`consume` is true or false.", param="consume")
    if consume == "true":
        return job_response(*await services.jobs.consume(job_id, principal.id))
    record = await services.jobs.get(job_id, principal.id)
    return job_response(record, await services.jobs.result(record) if record.status == SUCCEEDED else None)


def job_response(record: JobRecord, result: bytes | None) -> Response:
    body = json.dumps(job_object(record))
    if result is not None:  # spliced in: the result is megabytes of base64, already JSON
        body = f'{body[:-1]}, "result": {result.decode()}}}'
    return Response(body, media_type="application/json")


async def list_jobs(request: Request) -> JSONResponse:
    """The caller's jobs, newest first: `limit` per page (at most MAX_PAGE), `after` the last id of
    the previous page (its `next_cursor`)."""
    services, principal = Services.of(request), await caller(request)
    limit = page_size(request.query_params.get("limit"))
    after = request.query_params.get("after")
    if after is not None and not JOB_ID.fullmatch(after):
        raise InvalidParameter("`after` is a job id: the `next_cursor` of the previous page.", param="after")
    records = await services.jobs.page(principal.id, after, limit + 1)
    page = records[:limit]
    more = len(records) > limit
    return JSONResponse(
        {
            "object": "list",
            "data": [job_object(record) for record in page],
            "has_more": more,
            "next_cursor": page[-1].id if more else None,
        }
    )


def page_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise InvalidParameter(f"`limit` is a whole number from 1 to {MAX_PAGE}.", param="limit")
    return int(value)


async def cancel_job(request: Request) -> JSONResponse:
    """A queued job never runs; a running one stops before its next step. Cancelling an ended job
    changes nothing and answers it as it is."""
    services, principal, job_id = Services.of(request), await caller(request), job_id_of(request)
    return JSONResponse(job_object(await services.jobs.cancel(job_id, principal.id)))


async def job_events(request: Request) -> StreamingResponse:
    """`text/event-stream`: a `job` event with the job object (no result) whenever its status or
    progress changes, until it ends or the server's request deadline passes (reconnect then)."""
    services, principal, job_id = Services.of(request), await caller(request), job_id_of(request)
    first = await services.jobs.get(job_id, principal.id)
    return StreamingResponse(
        events(services, first, principal.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def events(services: Services, record: JobRecord, principal: str) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + services.settings.request_timeout
    sent: dict[str, Any] | None = None
    while True:
        job = job_object(record)
        if job != sent:
            yield f"event: job\ndata: {json.dumps(job)}\n\n"
            sent = job
        if record.status in ENDED or loop.time() >= deadline:
            return
        await asyncio.sleep(EVENT_SECONDS)
        try:
            record = await services.jobs.get(record.id, principal)
        except JobNotFound:  # consumed meanwhile
            return

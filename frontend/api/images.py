"""`POST /v1/images/generations`: auth -> admission and ledger -> request model -> catalog -> pipeline
-> safety check -> encoding -> response; and `GET /v1/images/progress/{id}`, how far one has got."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from frontend.accounting import Usage, Work
from frontend.api.parameters import RequestBudget, output_quality, resolve_job
from frontend.api.protocol import ImageData, ImageResponse, parse_image_request
from frontend.auth.scopes import IMAGES, STUDIO_ACCESS
from frontend.errors import ProgressNotFound
from frontend.imaging import encode_image_base64
from frontend.progress import PROGRESS_HEADER, Progress
from frontend.routing import VERSION_HEADER
from frontend.services import Services

SERVER_TIMING_HEADER = "Server-Timing"
"""Where one generation's time went, in milliseconds (W3C Server-Timing, which browsers' developer
tools show): `queue` waiting for a running slot, `generate` the pipeline, `inference` the part of it
spent waiting on Triton, `encode` the image encoding. `imagegen bench` reports them."""
PROMPT_TRUNCATED_HEADER = "X-Prompt-Truncated"
"""Set to "true" when a text encoder read only the start of the prompt or negative prompt (CLIP: 77
tokens, T5: 256 for schnell, 512 for dev), as diffusers truncates; the image still comes back."""


async def create_images(request: Request) -> Response:
    """Who may generate, how often, and what it cost: the run itself is `generate_images`."""
    services = Services.of(request)
    principal = await services.auth.authorize(request, IMAGES, STUDIO_ACCESS)
    async with services.rate_limits.admit(principal):
        with services.progress.track(principal.id, request.headers.get(PROGRESS_HEADER)) as progress:
            async with services.ledger.record(principal, progress) as usage:
                # Read before the run: a disconnect is then the only message left to wait for.
                body = await request.body()
                return await services.admission.run(
                    generate_images(request, body, usage, progress), client_disconnected(request)
                )


async def generate_images(request: Request, body: bytes, usage: Usage, progress: Progress) -> Response:
    """Under the request's deadline, stopped if the client disconnects (`admission.py`)."""
    services = Services.of(request)
    image_request = parse_image_request(body)
    pipeline = services.catalog.resolve(image_request.model)
    settings = services.settings
    budget = RequestBudget(settings.max_pixels_per_request, settings.max_work_per_request)
    caller = caller_identity(usage.principal.id, image_request.user)
    job = await asyncio.to_thread(resolve_job, image_request, pipeline, budget, caller)
    job = await services.adapters.attach(job, pipeline.name, pipeline.lora)
    quality = output_quality(image_request)
    await services.safety.check_prompt(job.prompt)
    usage.work = Work.of(pipeline.name, job)
    timings: dict[str, float] = {}
    queued = time.perf_counter()
    async with services.admission.slot(pipeline.name, usage.principal.id):
        started = time.perf_counter()
        progress.stage = "generating"
        # One version for every Triton call of this request, counted in flight until it ends.
        with services.routing.pinned(pipeline, caller) as (served, version):
            generation = await served.generate(job, progress)
        timings |= {"queue": started - queued, "generate": time.perf_counter() - started}
    timings["inference"] = generation.compute_seconds
    usage.measured(generation.compute_seconds)
    progress.stage = "checking"
    await services.safety.check_images(generation.images, usage.clock)
    progress.stage = "encoding"
    started = time.perf_counter()
    encoded = await asyncio.gather(
        *(
            asyncio.to_thread(encode_image_base64, image, image_request.output_format, quality)
            for image in generation.images
        )
    )
    timings["encode"] = time.perf_counter() - started
    cost = await services.ledger.charge(usage)
    response = ImageResponse(
        created=int(time.time()),
        data=[ImageData(b64_json=b64, seed=seed) for b64, seed in zip(encoded, job.seeds, strict=True)],
        energy_cost=cost.energy_kwh,
        credits_cost=cost.credits,
    )
    headers = {
        VERSION_HEADER: str(version),
        SERVER_TIMING_HEADER: ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in timings.items()),
    }
    if generation.prompt_truncated:
        headers[PROMPT_TRUNCATED_HEADER] = "true"
    # Serialised off the event loop, by pydantic's own encoder: the base64 images make the body
    # megabytes (3.3 MB for one 1024x1024 PNG; json.dumps took 9-12 ms of the loop, this 4-7 ms).
    payload = await asyncio.to_thread(response.model_dump_json, exclude_none=True)
    return Response(payload, media_type="application/json", headers=headers)


async def client_disconnected(request: Request) -> None:
    """Returns when the client has gone; the body has been read, so the only message left is the
    disconnect (uvicorn also sends it once the response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def caller_identity(principal: str, user: str | None) -> str:
    """Who is asking: the key or account, or the end user it names in `user` (OpenAI's field for
    that). A canary keeps each on one version, so a platform's users move to a canary one by one, not
    all at once; the prompt cache keeps their prompts apart."""
    return principal if user is None else f"{principal}\0{user}"


async def get_progress(request: Request) -> JSONResponse:
    """The caller's own generation named by `X-Progress-Id`; the same credentials as generating."""
    services = Services.of(request)
    principal = await services.auth.authorize(request, IMAGES, STUDIO_ACCESS)
    progress_id = request.path_params["progress_id"]
    progress = services.progress.get(principal.id, progress_id)
    if progress is None:
        raise ProgressNotFound(f"No generation of yours is running or just finished under `{progress_id}`.")
    return JSONResponse({"id": progress_id, "stage": progress.stage, "step": progress.step, "steps": progress.steps})

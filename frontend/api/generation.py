"""One generation, from a validated request to its encoded images, with no HTTP in it: the
generations and edits routes, their event streams and the jobs worker all run it.

`prepare_generation` checks everything a request can be refused for (model, parameters, budgets,
adapters, prompt policy) before any slot is taken; `run_generation` waits for the model's running
slot, generates, checks and encodes the images, and charges them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from frontend.accounting import Usage, Work
from frontend.api.image_details import describe
from frontend.api.parameters import RequestBudget, check_moderation, output_quality, resolve_job
from frontend.api.protocol import ImageData, ImageDetails, ImageRequest, ImageResponse
from frontend.imaging import encode_image_base64
from frontend.pipelines.job import GenerationJob
from frontend.pipelines.pipeline import DiffusionPipeline
from frontend.pipelines.previews import Previews
from frontend.progress import Progress
from frontend.services import Services


@dataclass(frozen=True)
class PreparedGeneration:
    """A request that passed every check: what `run_generation` needs and nothing left to refuse."""

    request: ImageRequest
    pipeline: DiffusionPipeline
    job: GenerationJob
    quality: int | None
    """The output encoding's quality (jpeg, webp); None: the encoder's default."""
    caller: str
    details: ImageDetails
    """What the response echoes: size, quality tier, format, background, token usage."""


@dataclass(frozen=True)
class GeneratedImages:
    response: ImageResponse
    version: int
    """The model version every Triton call of the request named."""
    timings: dict[str, float]
    """Seconds by stage: `queue`, `generate`, `inference`, `encode` (the Server-Timing header)."""
    prompt_truncated: bool


async def prepare_generation(services: Services, image_request: ImageRequest, usage: Usage) -> PreparedGeneration:
    pipeline = services.catalog.resolve(image_request.model)
    settings = services.settings
    budget = RequestBudget(settings.max_pixels_per_request, settings.max_work_per_request)
    check_moderation(image_request, settings.moderation_low)
    caller = caller_identity(usage.principal.id, image_request.safety_identifier or image_request.user)
    job = await asyncio.to_thread(resolve_job, image_request, pipeline, budget, caller)
    job = await services.adapters.attach(job, pipeline.name, pipeline.lora)
    quality = output_quality(image_request)
    await services.safety.check_prompt(job.prompt)
    usage.work = Work.of(pipeline.name, job)
    return PreparedGeneration(image_request, pipeline, job, quality, caller, describe(image_request, pipeline, job))


async def run_generation(
    services: Services,
    prepared: PreparedGeneration,
    usage: Usage,
    progress: Progress,
    background: bool = False,
    previews: Previews | None = None,
) -> GeneratedImages:
    """`background`: a job's (frontend/jobs.py), which takes a slot only when no interactive request waits.
    `previews`: where a stream's previews of the images go while they are denoised (api/streaming.py)."""
    job, pipeline = prepared.job, prepared.pipeline
    timings: dict[str, float] = {}
    queued = time.perf_counter()
    async with services.admission.slot(pipeline.name, usage.principal.id, background):
        started = time.perf_counter()
        progress.stage = "generating"
        # One version for every Triton call of this request, counted in flight until it ends.
        with services.routing.pinned(pipeline, prepared.caller) as (served, version):
            generation = await served.generate(job, progress, previews)
        timings |= {"queue": started - queued, "generate": time.perf_counter() - started}
    timings["inference"] = generation.compute_seconds
    usage.measured(generation.compute_seconds)
    progress.stage = "checking"
    await services.safety.check_images(generation.images, usage.clock)
    progress.stage = "encoding"
    started = time.perf_counter()
    output_format = prepared.request.output_format
    encoded = await asyncio.gather(
        *(asyncio.to_thread(encode_image_base64, image, output_format, prepared.quality) for image in generation.images)
    )
    timings["encode"] = time.perf_counter() - started
    cost = await services.ledger.charge(usage)
    response = ImageResponse(
        **prepared.details.model_dump(),
        created=int(time.time()),
        data=[ImageData(b64_json=b64, seed=seed) for b64, seed in zip(encoded, job.seeds, strict=True)],
        energy_cost=cost.energy_kwh,
        credits_cost=cost.credits,
    )
    return GeneratedImages(response, version, timings, generation.prompt_truncated)


def caller_identity(principal: str, user: str | None) -> str:
    """Who is asking: the key or account, or the end user it names in `user` (OpenAI's field for
    that). A canary keeps each on one version, so a platform's users move to a canary one by one, not
    all at once; the prompt cache keeps their prompts apart."""
    return principal if user is None else f"{principal}\0{user}"

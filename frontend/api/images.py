"""`POST /v1/images/generations`: auth -> admission and ledger -> request model -> catalog -> pipeline
-> safety check -> encoding -> response."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from frontend.accounting import Usage, Work
from frontend.api.parameters import output_quality, resolve_job
from frontend.api.protocol import ImageData, ImageResponse, parse_image_request
from frontend.auth.scopes import IMAGES, STUDIO_ACCESS
from frontend.imaging import encode_image_base64


async def create_images(request: Request) -> JSONResponse:
    """Who may generate, how often, and what it cost: the run itself is `generate_images`."""
    state = request.app.state
    principal = await state.auth.authorize(request, IMAGES, STUDIO_ACCESS)
    with state.rate_limits.admit(principal):
        async with state.ledger.record(principal) as usage:
            return await generate_images(request, usage)


async def generate_images(request: Request, usage: Usage) -> JSONResponse:
    state = request.app.state
    image_request = parse_image_request(await request.body())
    pipeline = state.catalog.resolve(image_request.model)
    job = await asyncio.to_thread(resolve_job, image_request, pipeline.name, pipeline.limits)
    quality = output_quality(image_request)
    state.safety.check_prompt(job.prompt)
    usage.work = Work.of(pipeline.name, job)
    generation = await pipeline.generate(job)
    usage.measured(generation.compute_seconds)
    await state.safety.check_images(generation.images, usage.clock)
    encoded = await asyncio.gather(
        *(
            asyncio.to_thread(encode_image_base64, image, image_request.output_format, quality)
            for image in generation.images
        )
    )
    cost = await state.ledger.charge(usage)
    response = ImageResponse(
        created=int(time.time()),
        data=[ImageData(b64_json=b64, seed=seed) for b64, seed in zip(encoded, job.seeds, strict=True)],
        energy_cost=cost.energy_kwh,
        credits_cost=cost.credits,
    )
    return JSONResponse(response.model_dump(exclude_none=True))

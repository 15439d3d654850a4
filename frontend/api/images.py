"""`POST /v1/images/generations`: auth -> request model -> catalog -> pipeline -> encoding -> response."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from frontend.api.errors import InvalidParameter
from frontend.api.protocol import ImageData, ImageRequest, ImageResponse, parse_image_request
from frontend.auth import authenticate
from frontend.imaging import encode_png_base64
from frontend.pipelines.job import GenerationJob, Limits
from frontend.pipelines.noise import image_seeds

JOULES_PER_KWH = 3.6e6


async def create_images(request: Request) -> JSONResponse:
    state = request.app.state
    authenticate(request, state.api_key)
    image_request = parse_image_request(await request.body())
    pipeline = state.catalog.resolve(image_request.model)
    job = resolve_job(image_request, pipeline.limits)
    generation = await pipeline.generate(job)
    encoded = await asyncio.gather(*(asyncio.to_thread(encode_png_base64, image) for image in generation.images))
    response = ImageResponse(
        created=int(time.time()),
        data=[ImageData(b64_json=b64, seed=seed) for b64, seed in zip(encoded, job.seeds, strict=True)],
        energy_cost=round(generation.compute_seconds * state.settings.device_watts / JOULES_PER_KWH, 9),
        credits_cost=0.0,
    )
    return JSONResponse(response.model_dump(exclude_none=True))


def resolve_job(request: ImageRequest, limits: Limits) -> GenerationJob:
    """Apply the model's defaults and bounds to a request."""
    width, height = resolve_size(request, limits)
    steps = request.steps if request.steps is not None else limits.default_steps
    if steps > limits.max_steps:
        raise InvalidParameter(f"`steps` must be between 1 and {limits.max_steps} for this model.", param="steps")
    return GenerationJob(
        prompt=request.prompt,
        width=width,
        height=height,
        steps=steps,
        seeds=image_seeds(request.seed, request.n),
        guidance=limits.default_guidance,
    )


def resolve_size(request: ImageRequest, limits: Limits) -> tuple[int, int]:
    """`width`/`height` when given (both), else the `size` preset, else the model's default size."""
    if (request.width is None) != (request.height is None):
        raise InvalidParameter("Give both `width` and `height`, or neither.", param="width")
    if request.width is not None and request.height is not None:
        if request.size is not None:
            raise InvalidParameter("Give either `size` or `width`/`height`, not both.", param="size")
        for param, side in (("width", request.width), ("height", request.height)):
            if not limits.min_side <= side <= limits.max_side or side % limits.side_multiple:
                raise InvalidParameter(
                    f"`{param}` must be a multiple of {limits.side_multiple} between "
                    f"{limits.min_side} and {limits.max_side}; got {side}.",
                    param=param,
                )
        return request.width, request.height
    size = request.size or limits.default_size
    if size == "auto":
        size = limits.default_size
    if size not in limits.sizes:
        raise InvalidParameter(
            f"`size` must be one of {', '.join(limits.sizes)} or auto for this model; got {size!r}.", param="size"
        )
    width, height = (int(side) for side in size.split("x"))
    return width, height

"""`POST /v1/images/generations`: auth -> rate limits -> ledger -> request model -> generation
(generation.py: catalog, pipeline, safety check, encoding) -> response; and
`GET /v1/images/progress/{id}`, how far one has got."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from frontend.accounting import Usage
from frontend.api.generation import GeneratedImages, prepare_generation, run_generation
from frontend.api.jobs import deferred, submit_job
from frontend.api.protocol import ImageRequest, parse_image_request
from frontend.api.streaming import EventKind, EventStreamResponse, ImageEventStream
from frontend.auth.scopes import IMAGES, STUDIO_ACCESS
from frontend.errors import ProgressNotFound
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

RequestReader = Callable[[Request], Awaitable[ImageRequest]]
"""Reads and validates one endpoint's body (JSON, or the edits endpoint's multipart form)."""


async def create_images(request: Request) -> Response:
    return await answer(request, read_json_request)


async def read_json_request(request: Request) -> ImageRequest:
    return parse_image_request(await request.body())


async def answer(request: Request, read: RequestReader, events: EventKind = "image_generation") -> Response:
    """Who may generate, how often, and what it cost, for any image endpoint; `read` gives the request,
    `events` names a stream's events."""
    services = Services.of(request)
    principal = await services.auth.authorize(request, IMAGES, STUDIO_ACCESS)
    # A stream's events are sent after this returns: it takes over what is held, and closes it when it ends.
    async with contextlib.AsyncExitStack() as held:
        await held.enter_async_context(services.rate_limits.admit(principal))
        progress = held.enter_context(services.progress.track(principal.id, request.headers.get(PROGRESS_HEADER)))
        usage = await held.enter_async_context(services.ledger.record(principal, progress))
        # Read before the run: a disconnect is then the only message left to wait for.
        image_request = await read(request)
        if deferred(request, image_request):  # a job (api/jobs.py): checked now, run later
            return await submit_job(services, image_request, usage)
        if image_request.stream:
            stream = ImageEventStream(services, image_request, usage, progress, events)
            await stream.start(client_disconnected(request))
            return EventStreamResponse(stream, held.pop_all())
        return await services.admission.run(
            generate_images(services, image_request, usage, progress), client_disconnected(request)
        )


async def generate_images(
    services: Services, image_request: ImageRequest, usage: Usage, progress: Progress
) -> Response:
    """Under the request's deadline, stopped if the client disconnects (`admission.py`)."""
    prepared = await prepare_generation(services, image_request, usage)
    return await json_response(await run_generation(services, prepared, usage, progress))


async def json_response(generated: GeneratedImages) -> Response:
    headers = {
        VERSION_HEADER: str(generated.version),
        SERVER_TIMING_HEADER: ", ".join(
            f"{name};dur={seconds * 1000:.1f}" for name, seconds in generated.timings.items()
        ),
    }
    if generated.prompt_truncated:
        headers[PROMPT_TRUNCATED_HEADER] = "true"
    # Serialised off the event loop, by pydantic's own encoder: the base64 images make the body
    # megabytes (3.3 MB for one 1024x1024 PNG; json.dumps took 9-12 ms of the loop, this 4-7 ms).
    payload = await asyncio.to_thread(generated.response.model_dump_json, exclude_none=True)
    return Response(payload, media_type="application/json", headers=headers)


async def client_disconnected(request: Request) -> None:
    """Returns when the client has gone; the body has been read, so the only message left is the
    disconnect (uvicorn also sends it once the response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def get_progress(request: Request) -> JSONResponse:
    """The caller's own generation named by `X-Progress-Id`; the same credentials as generating."""
    services = Services.of(request)
    principal = await services.auth.authorize(request, IMAGES, STUDIO_ACCESS)
    progress_id = request.path_params["progress_id"]
    progress = services.progress.get(principal.id, progress_id)
    if progress is None:
        raise ProgressNotFound(f"No generation of yours is running or just finished under `{progress_id}`.")
    return JSONResponse({"id": progress_id, "stage": progress.stage, "step": progress.step, "steps": progress.steps})

"""`"stream": true` on the image endpoints: the generation's events as Server-Sent Events, OpenAI's
names and fields (`image_generation.partial_image` ... `image_generation.completed`, `image_edit.*`
for edits), which the official SDKs' `stream=True` parse into their typed events.

The generation runs as a task under the request's deadline (`admission.run`: stopped when the client
disconnects), putting its events in a queue that the response drains. The response answers only once
the first event is there, so every refusal and failure before it is an ordinary JSON error with its
status; a failure after it is an `error` event carrying the JSON envelope's `error`, and the stream
ends. The request's rate-limit, progress and ledger contexts are handed to the response and closed
when the stream ends: the ledger row is written then.

A partial image is a preview (pipelines/previews.py): checked by the image-safety model like any
image returned, encoded in the request's output format, its Triton time billed as energy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from frontend.accounting import InferenceClock, Usage
from frontend.api.errors import error_body
from frontend.api.generation import GeneratedImages, PreparedGeneration, prepare_generation, run_generation
from frontend.api.protocol import ImageDetails, ImageRequest
from frontend.errors import APIError, InternalError
from frontend.imaging import encode_image_base64
from frontend.progress import Progress
from frontend.safety import SafetyFilter
from frontend.services import Services

log = logging.getLogger(__name__)

EventKind = Literal["image_generation", "image_edit"]
"""Whose events a stream sends: the generations endpoint's or the edits endpoint's."""
PartialImageType = Literal["image_generation.partial_image", "image_edit.partial_image"]
CompletedType = Literal["image_generation.completed", "image_edit.completed"]
EVENT_TYPES: dict[EventKind, tuple[PartialImageType, CompletedType]] = {
    "image_generation": ("image_generation.partial_image", "image_generation.completed"),
    "image_edit": ("image_edit.partial_image", "image_edit.completed"),
}
MEDIA_TYPE = "text/event-stream"


class PartialImageEvent(BaseModel):
    """One preview of one image (OpenAI's `ImageGenPartialImageEvent`, `ImageEditPartialImageEvent`)."""

    type: PartialImageType
    b64_json: str
    partial_image_index: int
    """0, 1, 2: the previews of an image in the order they were made."""
    image_index: int
    """This API's: which image of the request's `n` the preview shows."""
    size: str
    quality: str
    output_format: str
    background: str
    created_at: int


class CompletedEvent(ImageDetails):
    """One final image (OpenAI's `ImageGenCompletedEvent`, `ImageEditCompletedEvent`), with the fields
    the JSON response carries: the image's own (`b64_json`, `seed`) and the request's (`usage`, the
    costs: the same on each image's event)."""

    type: CompletedType
    b64_json: str
    image_index: int
    """This API's: which image of the request's `n` it is."""
    seed: int
    created_at: int
    energy_cost: float
    credits_cost: float


class ErrorEvent(BaseModel):
    """A failure after the stream started; the stream ends with it. The SDKs raise it as an APIError."""

    type: Literal["error"]
    error: dict[str, str | None]
    """The JSON error envelope's `error`: message, type, param, code."""


@dataclass(frozen=True)
class Preview:
    index: int
    images: list[npt.NDArray[np.uint8]]


@dataclass(frozen=True)
class Failed:
    error: BaseException


Event = Preview | GeneratedImages | Failed
"""What the generation's task puts in the queue: previews, then the images or a failure, which ends it."""


class StreamedPreviews:
    """The pipeline's `Previews` for a stream: each preview is safety-checked, then queued."""

    def __init__(self, count: int, safety: SafetyFilter, events: asyncio.Queue[Event]) -> None:
        self.count = count
        self._safety = safety
        self._events = events
        self._shown = 0

    async def show(self, images: list[npt.NDArray[np.uint8]], clock: InferenceClock) -> None:
        # A preview is an image returned: the same check as the final images, or it would show what they may not.
        await self._safety.check_images(images, clock)
        self._events.put_nowait(Preview(self._shown, images))
        self._shown += 1


class ImageEventStream:
    """One streamed generation: its task, and the events it has made but not yet sent."""

    def __init__(
        self, services: Services, image_request: ImageRequest, usage: Usage, progress: Progress, kind: EventKind
    ) -> None:
        self.partial_type, self.completed_type = EVENT_TYPES[kind]
        self.error: BaseException | None = None
        """The failure the stream ended with, once it has."""
        self._services = services
        self._request = image_request
        self._usage = usage
        self._progress = progress
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._prepared: PreparedGeneration | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: Event | None = None

    async def start(self, client_gone: Coroutine[Any, Any, None]) -> None:
        """Run the generation and wait for its first event; a failure before it is raised here."""
        self._task = asyncio.create_task(self._run(client_gone))
        try:
            first = await self._events.get()
        except BaseException:
            await self.close()
            raise
        if isinstance(first, Failed):
            raise first.error
        self._first = first

    async def _run(self, client_gone: Coroutine[Any, Any, None]) -> None:
        try:
            await self._services.admission.run(self._generate(), client_gone)
        except Exception as exc:
            self._events.put_nowait(Failed(exc))

    async def _generate(self) -> None:
        services = self._services
        self._prepared = await prepare_generation(services, self._request, self._usage)
        previews = StreamedPreviews(self._request.partial_images, services.safety, self._events)
        generated = await run_generation(services, self._prepared, self._usage, self._progress, previews=previews)
        self._events.put_nowait(generated)

    async def close(self) -> None:
        """Stop the generation if it still runs (the response was cancelled)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def messages(self) -> AsyncIterator[bytes]:
        """The events as Server-Sent Events: the previews, then the final images or a failure."""
        event = self._first
        while isinstance(event, Preview):
            for image_index, image in enumerate(event.images):
                data = await asyncio.to_thread(self._partial_event, event.index, image_index, image)
                yield _message(self.partial_type, data)
            event = await self._events.get()
        if isinstance(event, Failed):
            self.error = event.error
            yield _message("error", self._error_event(event.error))
        elif event is not None:
            for image_index in range(len(event.response.data)):
                data = await asyncio.to_thread(self._completed_event, event, image_index)
                yield _message(self.completed_type, data)

    @property
    def prepared(self) -> PreparedGeneration:
        assert self._prepared is not None, "an image event comes only once the request is prepared"
        return self._prepared

    def _partial_event(self, index: int, image_index: int, image: npt.NDArray[np.uint8]) -> str:
        prepared = self.prepared
        return PartialImageEvent(
            type=self.partial_type,
            b64_json=encode_image_base64(image, self._request.output_format, prepared.quality),
            partial_image_index=index,
            image_index=image_index,
            created_at=int(time.time()),
            **prepared.details.model_dump(exclude={"usage"}),
        ).model_dump_json()

    def _completed_event(self, generated: GeneratedImages, image_index: int) -> str:
        response, data = generated.response, generated.response.data[image_index]
        return CompletedEvent(
            type=self.completed_type,
            b64_json=data.b64_json,
            image_index=image_index,
            seed=data.seed,
            created_at=int(time.time()),
            energy_cost=response.energy_cost,
            credits_cost=response.credits_cost,
            **self.prepared.details.model_dump(),
        ).model_dump_json()

    @staticmethod
    def _error_event(error: BaseException) -> str:
        if not isinstance(error, APIError):
            log.error("a streamed generation failed", exc_info=error)
            error = InternalError("The server failed to process the request.")
        return ErrorEvent(type="error", **error_body(error)).model_dump_json()


def _message(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


class EventStreamResponse(Response):
    """Sends a started stream's events, then closes what the request held (`held`: its rate-limit,
    progress and ledger contexts), with the stream's failure if it ended with one, before its last
    byte, so the access line names the model and the error code as for a JSON answer."""

    media_type = MEDIA_TYPE

    def __init__(self, stream: ImageEventStream, held: contextlib.AsyncExitStack) -> None:
        self.stream = stream
        self.held = held
        self.status_code = 200
        self.background = None
        # No buffering by a proxy (nginx reads X-Accel-Buffering): each event goes out as it is made.
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        failure: BaseException | None = None
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for message in self.stream.messages():
                await send({"type": "http.response.body", "body": message, "more_body": True})
        except BaseException as exc:
            failure = exc
            raise
        finally:
            await self.stream.close()
            ended = failure or self.stream.error
            await self.held.__aexit__(type(ended) if ended else None, ended, ended.__traceback__ if ended else None)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

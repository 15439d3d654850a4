"""What a POST to the API may carry: JSON (415 otherwise) of at most `max_body_bytes` (413 otherwise).

An ASGI middleware, so a body over the limit is refused by its `Content-Length` before it is read,
and a chunked one as soon as the bytes read pass the limit, never buffered whole.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frontend.api.errors import PayloadTooLarge, UnsupportedMediaType, error_response

JSON = "application/json"


class BodyLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # No Content-Type is read as JSON: some clients send a JSON body without saying so.
        media_type = headers.get("content-type", JSON).partition(";")[0].strip().lower()
        if media_type != JSON:
            error = UnsupportedMediaType(f"The body must be {JSON}, not {media_type or 'empty'}.")
            await error_response(error)(scope, receive, send)
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await error_response(self._too_large())(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()  # inside the route: answered by the APIError handler
            return message

        await self.app(scope, limited, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The body is larger than this server's limit of {self.max_body_bytes} bytes.")

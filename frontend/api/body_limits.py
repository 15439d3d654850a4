"""What a POST to the API may carry: JSON (415 otherwise; also a multipart form where a route takes
one: `FORM_PATHS`) of at most `max_body_bytes` (413 otherwise), that parses (400 otherwise, `parse_json`).

An ASGI middleware, so a body over the limit is refused by its `Content-Length` before it is read,
and a chunked one as soon as the bytes read pass the limit, never buffered whole.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frontend.api.errors import error_response
from frontend.errors import MalformedBody, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
FORM = "multipart/form-data"
FORM_PATHS = frozenset({"/v1/images/edits"})
"""Routes that also take OpenAI's multipart form (api/edits.py bounds its parts and files)."""


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
        accepted = (JSON, FORM) if scope["path"] in FORM_PATHS else (JSON,)
        if media_type not in accepted:
            error = UnsupportedMediaType(f"The body must be {' or '.join(accepted)}, not {media_type or 'empty'}.")
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


def parse_json(body: bytes) -> Any:
    """The body's JSON value, or the client's error (`MalformedBody`) for every way `json.loads` fails:
    not UTF-8 or not JSON, nested past the recursion limit, or an integer longer than Python converts
    from text (`sys.get_int_max_str_digits()`, 4,300 digits: a bare ValueError, which was a 500)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedBody(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedBody("The request body nests JSON too deeply.") from None
    except ValueError:
        raise MalformedBody(
            f"The request body holds an integer of more than {sys.get_int_max_str_digits()} digits."
        ) from None

"""Every request gets an id: the client's `X-Request-Id` when it is sane, else a new one. The id is
answered in the same header on every response (errors too), carried on every log line written while
the request runs, sent to Triton as the inference request id (so Triton's trace names it), and
closes the request with one access line.

An ASGI middleware, outermost, so the 413/415 of `body_limits.py` and the 404/405 of the router are
counted and logged like any other answer. The access line never holds the prompt or the body: the
method, the path, the status, the latency, the model and error code once known, the id.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.datastructures import Headers
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frontend.metrics import Metrics
from frontend.request_context import RequestContext, enter_request

REQUEST_ID_HEADER = "X-Request-Id"
SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""What a client's id may be: short, and nothing that could break a log line, a header or a query."""
UNMATCHED = "unmatched"
"""The route label of a request that matched no route: its path would be unbounded cardinality."""

access_log = logging.getLogger("imagegen.access")


def new_request_id() -> str:
    """OpenAI's shape for its own `x-request-id` answers."""
    return f"req_{secrets.token_hex(12)}"


class RequestIds:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        context = RequestContext(offered if SANE_ID.fullmatch(offered) else new_request_id())
        # Left set when the request ends: an unexpected error is answered (and its traceback logged)
        # by Starlette's ServerErrorMiddleware, outside this one, and both need the id. uvicorn runs
        # each request in a task of its own, so the value never outlives the request.
        enter_request(context)
        started = time.perf_counter()
        status: int | None = None
        ended = False

        def end(final_status: int) -> None:
            """Count and log the request once, before its last byte is sent: whoever reads the
            response can then read its access line and its count."""
            nonlocal ended
            ended = True
            seconds = time.perf_counter() - started
            route: BaseRoute | None = scope.get("route")
            self.metrics.observe_http(scope["method"], getattr(route, "path", UNMATCHED), final_status)
            access_log.info(
                "%s %s %d %.3f s",
                scope["method"],
                scope["path"],
                final_status,
                seconds,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": final_status,
                    "duration_ms": round(seconds * 1000, 3),
                    "model": context.model,
                    "code": context.code,
                },
            )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", context.id.encode())]
            elif message["type"] == "http.response.body" and not message.get("more_body") and status is not None:
                end(status)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not ended:
                # The app raised before answering: ServerErrorMiddleware answers 500.
                end(status or 500)

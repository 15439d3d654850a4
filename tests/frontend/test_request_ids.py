"""The path no socket test can reach: a bug's 500 is answered outside the request id middleware (by
Starlette's ServerErrorMiddleware), and still carries the id, in its header and its traceback line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.routing import Route

from frontend.app import create_app
from frontend.logs import JsonFormatter
from frontend.settings import Settings


async def broken(request: Request) -> None:
    raise RuntimeError("a bug")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # the access line's level
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_bugs_500_carries_the_request_id_in_its_header_and_its_traceback_line(
    tmp_path: Path, json_log: io.StringIO
) -> None:
    app = create_app(Settings(state_dir=tmp_path), store=None, triton_url="127.0.0.1:1")  # type: ignore[arg-type]
    app.router.routes.append(Route("/broken", broken))

    async def call() -> tuple[httpx.Response, str]:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/broken", headers={"X-Request-Id": "bug-500"})
            return response, (await client.get("/metrics")).text

    response, metrics = asyncio.run(call())

    assert response.status_code == 500 and response.json()["error"]["code"] == "SERVER_5000"
    assert response.headers["x-request-id"] == "bug-500"
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    error = next(line for line in lines if line["level"] == "ERROR")
    assert error["request_id"] == "bug-500" and "RuntimeError: a bug" in error["exception"]
    access = next(line for line in lines if line["logger"] == "imagegen.access" and line["path"] == "/broken")
    assert (access["status"], access["request_id"]) == (500, "bug-500")
    assert 'imagegen_http_requests_total{method="GET",route="/broken",status="500"} 1.0' in metrics

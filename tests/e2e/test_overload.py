"""Overload: a burst beyond a model's queue is refused at once with a 429, and a client that goes
away gives its capacity back at once (guarded_server: 2 running + 2 queued per model)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter

import httpx

from tests.harness import API_KEY, Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL = "flux-schnell"


def load(server: Server) -> dict[str, int]:
    """Generations of MODEL running and queued, as /readyz reports them."""
    models = httpx.get(f"{server.root}/readyz").json()["models"]
    return models.get(MODEL, {"running": 0, "queued": 0})


def test_a_burst_beyond_the_queue_gets_only_200s_and_429s(guarded_server: Server) -> None:
    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(headers=AUTH, timeout=120, limits=limits) as client:
            body = {"model": MODEL, "prompt": "a lighthouse in a storm", "size": "256x256"}
            return await asyncio.gather(
                *(client.post(f"{guarded_server.base_url}/images/generations", json=body) for _ in range(64))
            )

    responses = asyncio.run(burst())

    statuses = Counter(response.status_code for response in responses)
    print(f"64 concurrent requests against 2 running + 2 queued: {dict(statuses)}")
    assert set(statuses) == {200, 429}
    refused = [response for response in responses if response.status_code == 429]
    assert {response.json()["error"]["code"] for response in refused} == {"OVERLOAD_4291"}
    assert all(int(response.headers["Retry-After"]) > 0 for response in refused)
    assert load(guarded_server) == {"running": 0, "queued": 0}


def test_a_client_that_disconnects_frees_its_slot_at_once(guarded_server: Server) -> None:
    # Two 256x256 images of 100 steps: seconds of work on this machine.
    body = json.dumps({"model": MODEL, "prompt": "a slow painting", "size": "256x256", "n": 2, "steps": 100})
    request = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", guarded_server.port)) as client:
        client.sendall(request.encode())
        while load(guarded_server)["running"] == 0:
            assert time.monotonic() - started < 10, "the generation never started"
            time.sleep(0.01)
        time.sleep(0.5)
    disconnected = time.monotonic()
    while load(guarded_server) != {"running": 0, "queued": 0}:
        assert time.monotonic() - disconnected < 5, "the slot was not freed"
        time.sleep(0.01)
    freed_after = time.monotonic() - disconnected
    print(f"capacity back {freed_after * 1000:.0f} ms after the client disconnected")
    assert freed_after < 1.0

    # The server still serves, with the slot back.
    small = {"model": MODEL, "prompt": "a quick sketch", "size": "256x256"}
    response = httpx.post(f"{guarded_server.base_url}/images/generations", json=small, headers=AUTH, timeout=60)
    assert response.status_code == 200

"""Overload: a burst beyond a model's queue is refused at once with a 429, and a client that goes
away gives its capacity back at once, its remaining steps never run (guarded_server: 2 running + 2
queued per model).

Triton is paused (`triton_paused`) while the burst or the disconnect happens, so the generations
admitted stay in flight however fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter

import httpx

from tests.harness import (
    API_KEY,
    Server,
    denoised_samples,
    imagegen,
    load,
    paused_mid_flight,
    progress,
    sent_generation,
    triton_paused,
    wait_until,
)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL = "flux-schnell"
DENOISER = f"{MODEL}_transformer"
RUNNING, QUEUED = 2, 2
"""guarded_server's places per model (tests/conftest.py GUARDED_SETTINGS)."""


def operator_errors(server: Server) -> Counter[str]:
    """The error codes the usage ledger holds for the operator's key (`imagegen usage --json`)."""
    summaries = [json.loads(line) for line in imagegen(server, "usage", "--json").splitlines()]
    return Counter(next((s["errors"] for s in summaries if s["name"] == "operator"), {}))  # none before its first


def test_a_burst_beyond_the_queue_gets_only_200s_and_429s(guarded_server: Server) -> None:
    answered: list[httpx.Response] = []

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(headers=AUTH, timeout=120, limits=limits) as client:
            body = {"model": MODEL, "prompt": "a lighthouse in a storm", "size": "256x256"}

            async def send() -> httpx.Response:
                response = await client.post(f"{guarded_server.base_url}/images/generations", json=body)
                answered.append(response)
                return response

            return await asyncio.gather(*(send() for _ in range(64)))

    results: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: results.extend(asyncio.run(burst())))
    with triton_paused(guarded_server):
        sender.start()
        # The places are taken and held: every other request is answered while Triton is paused.
        wait_until(lambda: len(answered) == 64 - RUNNING - QUEUED, 60, "the refusals")
        assert load(guarded_server, MODEL) == {"running": RUNNING, "queued": QUEUED}
    sender.join()

    statuses = Counter(response.status_code for response in results)
    print(f"64 concurrent requests against {RUNNING} running + {QUEUED} queued: {dict(statuses)}")
    assert statuses == {200: RUNNING + QUEUED, 429: 64 - RUNNING - QUEUED}
    refused = [response for response in results if response.status_code == 429]
    assert {response.json()["error"]["code"] for response in refused} == {"OVERLOAD_4291"}
    assert all(int(response.headers["Retry-After"]) > 0 for response in refused)
    assert load(guarded_server, MODEL) == {"running": 0, "queued": 0}


def test_a_client_that_disconnects_frees_its_slot_at_once_and_its_steps_never_run(guarded_server: Server) -> None:
    samples, errors = denoised_samples(guarded_server, DENOISER), operator_errors(guarded_server)
    body = {"model": MODEL, "prompt": "a slow painting", "size": "256x256", "n": 2, "steps": 100}
    client = sent_generation(guarded_server, body, "disconnected-client")
    try:
        # Closed while Triton is paused: the generation is mid-way, whatever the machine's speed.
        with paused_mid_flight(guarded_server, ["disconnected-client"]):
            client.close()
            disconnected = time.monotonic()
            # Freed with Triton still paused: by the disconnect, not by the work's end (it cannot
            # end) nor by the deadline (300 s). How soon is printed, not bounded: that is the machine's.
            wait_until(lambda: load(guarded_server, MODEL) == {"running": 0, "queued": 0}, 30, "the slot freed")
            freed_after = time.monotonic() - disconnected
    finally:
        client.close()
    ran = progress(guarded_server, "disconnected-client")
    assert ran is not None and ran["stage"] == "failed"
    print(f"capacity back {freed_after * 1000:.0f} ms after the client disconnected, at step {ran['step']} of 100")

    # The server still serves, with the slot back (4 steps of 1 image).
    small = {"model": MODEL, "prompt": "a quick sketch", "size": "256x256"}
    response = httpx.post(f"{guarded_server.base_url}/images/generations", json=small, headers=AUTH, timeout=60)
    assert response.status_code == 200
    # Its remaining steps never ran: the steps it had run and at most the one in Triton when it was
    # stopped, 2 samples each.
    abandoned = denoised_samples(guarded_server, DENOISER) - samples - 4
    assert 2 * ran["step"] <= abandoned <= 2 * (ran["step"] + 1) < 2 * 100
    assert operator_errors(guarded_server) - errors == Counter({"CLIENT_4990": 1})

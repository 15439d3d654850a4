"""Tensors through system shared memory (frontend/shared_memory.py): the same images as over HTTP,
byte for byte; regions of its own for each request under way, reused by the next requests once it is
done, released if it ends otherwise; Triton's registrations always the frontend's live regions.

The session server's frontend uses shared memory (its Triton is embedded); this module's own frontend
sends everything over HTTP to that same Triton, so the two differ in the transport alone. Triton
killed and the server stopped are checked in test_faults.py, on servers that are stopped or killed.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from frontend.shared_memory import IDLE_REGIONS
from frontend.triton import SECRET_HEADER
from tests.e2e.images import AUTH, TOLERANCE, decode
from tests.harness import (
    Server,
    embedded_triton_secret,
    embedded_triton_url,
    paused_mid_flight,
    sent_generation,
    serving,
    shared_memory_regions,
    wait_until,
)


@pytest.fixture(scope="module")
def http_frontend(server: Server, model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second frontend on the session server's Triton, with shared memory off."""
    settings = {
        "IMAGEGEN_TRITON_URL": embedded_triton_url(server),
        "IMAGEGEN_TRITON_SECRET": embedded_triton_secret(server),
        "IMAGEGEN_TRITON_SHARED_MEMORY": "off",
        "IMAGEGEN_REQUESTS_PER_MINUTE": "100000",
    }
    with serving(model_repository, tmp_path_factory.mktemp("http-frontend"), settings=settings) as running:
        yield running


def regions_are_registered(server: Server) -> bool:
    """Whether Triton maps exactly the regions the frontend holds (in use, or idle in its pool)."""
    return {region.name for region in shared_memory_regions(server)} == set(registered(server))


def registered(server: Server) -> list[str]:
    """The shared memory regions the server's Triton has registered, by name."""
    url = f"http://{embedded_triton_url(server)}/v2/systemsharedmemory/status"
    response = httpx.get(url, headers={SECRET_HEADER: embedded_triton_secret(server)}, timeout=10)
    response.raise_for_status()
    return [region["name"] for region in response.json()]


def pngs(server: Server, body: dict[str, Any], progress_id: str | None = None) -> list[str]:
    headers = {**AUTH, "X-Progress-Id": progress_id} if progress_id else AUTH
    response = httpx.post(f"{server.base_url}/images/generations", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    return [item["b64_json"] for item in response.json()["data"]]


def pixels(png: str) -> npt.NDArray[np.int16]:
    return np.asarray(decode(png), dtype=np.int16)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "flux-schnell", "prompt": "a lighthouse", "size": "256x256", "n": 2, "seed": 5},
        {
            "model": "flux-dev",
            "prompt": "a lighthouse",
            "negative_prompt": "fog",
            "size": "256x256",
            "steps": 3,
            "seed": 5,
        },
        {"model": "sdxl", "prompt": "a lighthouse", "size": "256x256", "steps": 4, "seed": 5},
    ],
    ids=["flux-schnell", "flux-dev-true-cfg", "sdxl-cfg"],
)
def test_shared_memory_gives_the_same_pngs_as_http(server: Server, http_frontend: Server, body: dict[str, Any]) -> None:
    assert pngs(server, body) == pngs(http_frontend, body)


def test_concurrent_requests_each_have_regions_then_leave_them_to_the_next(
    server: Server, http_frontend: Server
) -> None:
    # Two of each model: as many as one key runs at once (IMAGEGEN_RUNNING_PER_KEY).
    bodies = [
        {"model": model, "prompt": prompt, "size": "256x256", "steps": 40, "seed": 7}
        for model in ("sdxl", "flux-schnell")
        for prompt in ("a red kite", "a blue boat")
    ]
    ids = [f"shared-memory-{index}" for index in range(len(bodies))]
    with ThreadPoolExecutor(len(bodies)) as pool:
        # SDXL's pair first, held mid-way while flux-schnell's is sent: what SDXL has left to run costs
        # many times flux-schnell's text encoders and first step, in proportion on any machine.
        futures = [pool.submit(pngs, server, body, i) for body, i in zip(bodies[:2], ids[:2], strict=True)]
        with paused_mid_flight(server, ids[:2], every=True):
            futures += [pool.submit(pngs, server, body, i) for body, i in zip(bodies[2:], ids[2:], strict=True)]
        with paused_mid_flight(server, ids, every=True):
            # Each its conditioning's, and the step in Triton's (from a pool that may hold idle ones).
            assert len(shared_memory_regions(server)) >= len(bodies)
        served = [future.result() for future in futures]
    # Batched with its model's other request in Triton, each read its own prompt: each image is that
    # request's alone.
    for images, body in zip(served, bodies, strict=True):
        assert int(np.abs(pixels(images[0]) - pixels(pngs(http_frontend, body)[0])).max()) <= TOLERANCE
    idle = {region.name for region in shared_memory_regions(server)}
    assert 0 < len(idle) <= IDLE_REGIONS
    # Idle, they hold the last requests' tensors: the serving account's alone (SECURITY.md).
    assert {region.stat().st_mode & 0o777 for region in shared_memory_regions(server)} == {0o600}
    assert regions_are_registered(server)
    # The next requests reuse them: no region is made, none registered again.
    for body in bodies:
        pngs(server, body)
    assert {region.name for region in shared_memory_regions(server)} == idle


def test_a_cancelled_request_releases_its_regions(server: Server) -> None:
    def names() -> set[str]:
        return {region.name for region in shared_memory_regions(server)}

    before = names()  # idle in the pool, left by earlier requests
    # Seconds of denoising, so that the wait below sees it mid-way on any machine.
    body = {"model": "flux-schnell", "prompt": "a slow tide", "size": "512x512", "n": 2, "steps": 100}
    client = sent_generation(server, body, "shared-memory-cancelled")
    try:
        with paused_mid_flight(server, ["shared-memory-cancelled"]):
            during = names()  # the pool's and the request's: its conditioning's at least
            client.close()
            # Gone from /dev/shm at once, while Triton (paused) still maps them for the step it holds:
            # whatever it made, and what it took from the pool, which it never gives back.
            wait_until(lambda: names() <= before and len(names()) < len(during), 30, "the request's regions unlinked")
    finally:
        client.close()
    left = names()
    # Triton lets go of them once that step ends: the frontend asks until it has.
    wait_until(lambda: regions_are_registered(server), 30, "Triton unregistered its regions")
    assert names() == left


def test_regions_idle_through_a_triton_restart_are_replaced(server: Server) -> None:
    """A Triton that restarted while the pool's regions idled knows none of them: the next request's
    first call that names one is made again over HTTP and the pool refilled, nothing failed."""
    body = {"model": "sdxl", "prompt": "a quiet bay", "size": "256x256", "steps": 3, "seed": 4}
    before = pngs(server, body)
    assert shared_memory_regions(server)
    url = f"http://{embedded_triton_url(server)}/v2/systemsharedmemory"
    headers = {SECRET_HEADER: embedded_triton_secret(server)}
    httpx.post(f"{url}/unregister", headers=headers, timeout=10).raise_for_status()  # what a restart forgets
    assert pngs(server, body) == before
    assert regions_are_registered(server)

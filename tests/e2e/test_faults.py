"""Faults: a request past its deadline, a stalled Triton, a Triton killed mid-flight and SIGTERM all
end every request promptly with a documented answer, and service resumes by itself.

Each fault is made for real and held by construction, never bet on a machine's speed: Triton is
frozen with SIGSTOP (`triton_paused`) so work in flight stays where it is, and its restart is held
off by taking its model repository away. The servers are the tests' own, on flux-schnell alone: a
3 s Triton call timeout under a long deadline, or a 3 s deadline under a long call timeout.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.harness import (
    API_KEY,
    Server,
    alive,
    denoised_samples,
    descendants,
    embedded_triton_pid,
    load,
    paused_mid_flight,
    serving,
    shared_memory_regions,
    triton_paused,
    wait_until,
)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL = "flux-schnell"
SMALL = {"model": MODEL, "prompt": "a harbour at dusk", "size": "256x256"}
TRITON_TIMEOUT_S = 3
REQUEST_TIMEOUT_S = 3
LONG_S = 120
"""The other bound of each server: far beyond anything a test waits for."""
UNLIMITED = {"IMAGEGEN_REQUESTS_PER_MINUTE": "100000", "IMAGEGEN_CONCURRENT_GENERATIONS": "100"}


@pytest.fixture(scope="module")
def faults_repository(schnell_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's own copy: a test takes it away to keep Triton from restarting."""
    import shutil

    return Path(shutil.copytree(schnell_repository, tmp_path_factory.mktemp("faults") / "repository"))


@pytest.fixture(scope="module")
def faults_server(faults_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A short Triton call timeout under a long request deadline: a stalled Triton is a 503."""
    settings = {**UNLIMITED, "IMAGEGEN_TRITON_TIMEOUT": str(TRITON_TIMEOUT_S), "IMAGEGEN_REQUEST_TIMEOUT": str(LONG_S)}
    with serving(faults_repository, tmp_path_factory.mktemp("faults-state"), settings=settings) as running:
        yield running


@pytest.fixture(scope="module")
def deadline_server(schnell_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A short request deadline under a long Triton call timeout: a stalled Triton is a 504."""
    settings = {**UNLIMITED, "IMAGEGEN_TRITON_TIMEOUT": str(LONG_S), "IMAGEGEN_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S)}
    with serving(schnell_repository, tmp_path_factory.mktemp("deadline-state"), settings=settings) as running:
        yield running


@pytest.fixture
def stopping_server(schnell_repository: Path, tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, which the test stops."""
    settings = {**UNLIMITED, "IMAGEGEN_TRITON_TIMEOUT": str(TRITON_TIMEOUT_S)}
    with serving(schnell_repository, tmp_path, settings=settings) as running:
        yield running


def generate(server: Server, body: dict[str, object], progress_id: str | None = None) -> tuple[httpx.Response, float]:
    """The response and the seconds it took."""
    headers = AUTH if progress_id is None else {**AUTH, "X-Progress-Id": progress_id}
    started = time.monotonic()
    response = httpx.post(f"{server.base_url}/images/generations", json=body, headers=headers, timeout=LONG_S)
    return response, time.monotonic() - started


def ready(server: Server) -> bool:
    return httpx.get(f"{server.root}/readyz", timeout=10).status_code == 200


def test_a_request_past_its_deadline_is_stopped_with_504(deadline_server: Server) -> None:
    assert generate(deadline_server, SMALL)[0].status_code == 200, "the server serves inside its deadline"
    samples = denoised_samples(deadline_server, f"{MODEL}_transformer")
    # Triton paused: the generation cannot end inside the deadline, however fast the machine.
    with triton_paused(deadline_server):
        response, seconds = generate(deadline_server, {**SMALL, "prompt": "a request that waits too long"})
        assert (response.status_code, response.json()["error"]["code"]) == (504, "TIMEOUT_5040")
        assert seconds >= REQUEST_TIMEOUT_S
        assert load(deadline_server, MODEL) == {"running": 0, "queued": 0}, "its place is freed at the deadline"
    wait_until(lambda: ready(deadline_server), 30, "ready after Triton resumed")
    assert generate(deadline_server, SMALL)[0].status_code == 200
    # Its remaining steps never ran: the transformer ran the last request's 4 steps and nothing else.
    assert denoised_samples(deadline_server, f"{MODEL}_transformer") - samples == 4


def test_a_stream_past_its_deadline_ends_with_an_error_event(deadline_server: Server) -> None:
    """Once a stream has started, a failure is its last event: OpenAI's `error` event, which the SDK
    raises as an APIError carrying the JSON envelope's code."""
    client = OpenAI(api_key=API_KEY, base_url=deadline_server.base_url, max_retries=0)
    stream = client.images.generate(
        **{**SMALL, "prompt": "a stream that waits too long"}, stream=True, partial_images=3, extra_body={"steps": 8}
    )
    assert next(stream).type == "image_generation.partial_image"
    # Triton paused after the first preview: the stream cannot end inside the deadline.
    with triton_paused(deadline_server), pytest.raises(openai.APIError) as failed:
        list(stream)
    assert (failed.value.code, failed.value.type) == ("TIMEOUT_5040", "server_error")
    assert load(deadline_server, MODEL) == {"running": 0, "queued": 0}, "its place is freed at the deadline"


def test_a_stalled_triton_fails_requests_with_503_within_the_call_timeout(faults_server: Server) -> None:
    with triton_paused(faults_server):
        response, seconds = generate(faults_server, SMALL)
        assert (response.status_code, response.json()["error"]["code"]) == (503, "INFERENCE_3503")
        assert TRITON_TIMEOUT_S <= seconds < LONG_S
        assert not ready(faults_server)
    wait_until(lambda: ready(faults_server), 30, "ready after Triton resumed")
    assert generate(faults_server, SMALL)[0].status_code == 200


def test_triton_killed_mid_flight_ends_every_request_and_comes_back(
    faults_server: Server, faults_repository: Path
) -> None:
    triton = embedded_triton_pid(faults_server)
    ids = [f"killed-mid-flight-{i:02d}" for i in range(16)]
    away = faults_repository.with_name("repository-away")
    with ThreadPoolExecutor(len(ids)) as pool:
        futures = [pool.submit(generate, faults_server, {**SMALL, "steps": 30}, i) for i in ids]
        with paused_mid_flight(faults_server, ids) as stages:
            assert shared_memory_regions(faults_server), "the generations' constant inputs, in shared memory"
            # Without its repository, the supervisor's restarts fail until it is back.
            faults_repository.rename(away)
            os.kill(triton, signal.SIGKILL)
        killed = time.monotonic()
        try:
            results = dict(zip(ids, (future.result()[0] for future in futures), strict=True))
            ended_after = time.monotonic() - killed
            print(f"after SIGKILL: stages {sorted(map(str, stages.values()))} ended {ended_after:.2f} s after it")

            # Every request that still needed Triton ends at once with a 503, not at the call timeout;
            # those past their last Triton call (encoding the image) or done complete.
            assert ended_after < TRITON_TIMEOUT_S
            assert not shared_memory_regions(faults_server), "every region unlinked as its request ended"
            for progress_id, response in results.items():
                if stages[progress_id] in ("encoding", "done"):
                    assert response.status_code == 200
                else:
                    assert (response.status_code, response.json()["error"]["code"]) == (503, "INFERENCE_3503")
            # Until Triton is back, new requests get the same 503.
            assert not ready(faults_server)
            response, seconds = generate(faults_server, SMALL)
            assert (response.status_code, response.json()["error"]["code"]) == (503, "INFERENCE_3503")
            assert seconds < TRITON_TIMEOUT_S
        finally:
            away.rename(faults_repository)

    # The supervisor restarts it by itself (1, 2, 4, ... s between tries).
    wait_until(lambda: ready(faults_server), 60, "ready after Triton's restart")
    print(f"ready again {time.monotonic() - killed:.2f} s after the kill")
    assert embedded_triton_pid(faults_server) != triton
    assert generate(faults_server, SMALL)[0].status_code == 200


def test_sigterm_finishes_in_flight_requests_then_stops(stopping_server: Server) -> None:
    processes = descendants(stopping_server.process.pid)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(generate, stopping_server, {**SMALL, "n": 2, "steps": 40}, "finished-after-sigterm")
        with paused_mid_flight(stopping_server, ["finished-after-sigterm"]):
            assert shared_memory_regions(stopping_server)
            stopping_server.process.send_signal(signal.SIGTERM)
            # The frontend has taken the signal once it stops accepting connections.
            wait_until(lambda: not answers(stopping_server), 30, "the frontend stops accepting connections")
        response, _ = in_flight.result()
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
    stopping_server.process.wait(timeout=30)
    assert not [pid for pid in processes if alive(pid)]
    assert not shared_memory_regions(stopping_server)


def answers(server: Server) -> bool:
    try:
        httpx.get(f"{server.root}/healthz", timeout=10)
    except httpx.ConnectError:
        return False
    return True

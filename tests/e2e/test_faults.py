"""Faults: a request past its deadline, a stalled Triton, a Triton killed mid-flight and SIGTERM all
end every request promptly with a documented answer, and service resumes by itself.

One server of its own (its Triton is stopped and killed), with a 3 s Triton call timeout and an 8 s
request deadline; the last test stops it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.harness import API_KEY, Server, alive, descendants, embedded_triton_pid, start_server, stop_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
SMALL = {"model": "flux-schnell", "prompt": "a harbour at dusk", "size": "256x256"}
TRITON_TIMEOUT_S = 3
REQUEST_TIMEOUT_S = 8


@pytest.fixture(scope="module")
def faults_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = {
        "IMAGEGEN_REQUESTS_PER_MINUTE": "100000",
        "IMAGEGEN_CONCURRENT_GENERATIONS": "100",
        "IMAGEGEN_TRITON_TIMEOUT": str(TRITON_TIMEOUT_S),
        "IMAGEGEN_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S),
    }
    running = start_server(model_repository, tmp_path_factory.mktemp("faults"), settings=settings)
    yield running
    stop_server(running)


def generate(server: Server, body: dict[str, object]) -> tuple[httpx.Response, float]:
    """The response and the seconds it took."""
    started = time.monotonic()
    response = httpx.post(f"{server.base_url}/images/generations", json=body, headers=AUTH, timeout=120)
    return response, time.monotonic() - started


def wait_ready(server: Server, within: float) -> float:
    """Seconds until /readyz answers 200."""
    started = time.monotonic()
    while httpx.get(f"{server.root}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() - started < within, f"not ready again within {within} s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_a_request_past_its_deadline_is_stopped_with_504(faults_server: Server) -> None:
    # 100 steps at 1024x1024 take far longer than the deadline on this machine.
    response, seconds = generate(faults_server, {**SMALL, "size": "1024x1024", "steps": 100})
    assert (response.status_code, response.json()["error"]["code"]) == (504, "TIMEOUT_5040")
    assert REQUEST_TIMEOUT_S <= seconds < REQUEST_TIMEOUT_S + 2
    assert httpx.get(f"{faults_server.root}/readyz").json()["models"]["flux-schnell"] == {"running": 0, "queued": 0}


def test_a_stalled_triton_fails_requests_with_503_within_the_call_timeout(faults_server: Server) -> None:
    triton = embedded_triton_pid(faults_server)
    os.kill(triton, signal.SIGSTOP)
    try:
        response, seconds = generate(faults_server, SMALL)
        assert (response.status_code, response.json()["error"]["code"]) == (503, "INFERENCE_3503")
        assert seconds < TRITON_TIMEOUT_S + 2
        assert httpx.get(f"{faults_server.root}/readyz", timeout=10).status_code == 503
    finally:
        os.kill(triton, signal.SIGCONT)
    wait_ready(faults_server, within=10)
    assert generate(faults_server, SMALL)[0].status_code == 200


def test_triton_killed_mid_flight_ends_every_request_and_comes_back(faults_server: Server) -> None:
    triton = embedded_triton_pid(faults_server)
    body = {**SMALL, "steps": 30}
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(generate, faults_server, body) for _ in range(16)]
        time.sleep(1.0)
        os.kill(triton, signal.SIGKILL)
        killed = time.monotonic()
        results = [future.result() for future in futures]
    ended_after = time.monotonic() - killed
    statuses = sorted(response.status_code for response, _ in results)
    print(f"after SIGKILL: statuses {statuses}, all ended {ended_after:.2f} s after the kill")
    assert set(statuses) <= {200, 503}
    assert 503 in statuses
    assert all(r.json()["error"]["code"] == "INFERENCE_3503" for r, _ in results if r.status_code == 503)
    assert ended_after < 60

    # Until Triton is back, new requests get the same 503; the supervisor restarts it by itself.
    assert generate(faults_server, SMALL)[0].status_code == 503
    restarted_in = wait_ready(faults_server, within=60)
    print(f"ready again {time.monotonic() - killed:.2f} s after the kill ({restarted_in:.2f} s of polling)")
    assert embedded_triton_pid(faults_server) != triton
    assert generate(faults_server, SMALL)[0].status_code == 200


def test_sigterm_finishes_in_flight_requests_then_stops(faults_server: Server) -> None:
    processes = descendants(faults_server.process.pid)
    with ThreadPoolExecutor(1) as pool:
        # A few seconds of work, well inside the request deadline and the shutdown grace.
        in_flight = pool.submit(generate, faults_server, {**SMALL, "n": 2, "steps": 40})
        time.sleep(1.0)
        faults_server.process.send_signal(signal.SIGTERM)
        response, _ = in_flight.result()
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
    faults_server.process.wait(timeout=30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{faults_server.root}/healthz")
    assert not [pid for pid in processes if alive(pid)]

"""A pool of Triton servers behind the frontends, on the real stack: two embedded `tritonserver`
processes on one model repository (tiny flux-schnell alone), two `imagegen serve` frontends sharing
one PostgreSQL, each with `IMAGEGEN_TRITON_URL` naming both servers.

Requests spread over both servers, a rollout moves both and fails no request, and a Triton killed
under load fails only its own requests in flight while the other serves the rest, then rejoins with
the routed versions loaded (its supervisor restarts it, as a Kubernetes Deployment would).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from frontend.embedded_triton import EmbeddedTriton
from frontend.triton import SECRET_HEADER
from tests.e2e.images import AUTH
from tests.e2e.load import Load
from tests.harness import API_KEY, Server, imagegen, start_server, stop_server, wait_until
from tests.postgres import PostgresCluster

MODEL = "flux-schnell"
SMALL = {"prompt": "a harbour crane at dusk", "model": MODEL, "width": 256, "height": 256, "steps": 2}
CLIENTS = 4
"""Per frontend: 8 requests in flight over 2 servers."""
SPREAD_REQUESTS = 48
SPREAD_SHARE = 0.3
"""Each server takes at least this share of the requests: both identical, picked by fewest in flight."""
TRITON_TIMEOUT_S = 120
"""Far above the failover times measured: a 503 seen sooner came from the kill, not a timeout."""
SECRET = secrets.token_urlsafe(32)
"""The pool's model-control secret: every server's and every frontend's (IMAGEGEN_TRITON_SECRET)."""


@pytest.fixture(scope="module")
def pool_repository(schnell_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy both servers load (one volume in production), version 2 exported into it later."""
    repository = tmp_path_factory.mktemp("pool-repository") / "models"
    shutil.copytree(schnell_repository, repository)
    return repository


@pytest.fixture(scope="module")
def tritons(pool_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedTriton]]:
    servers = [
        EmbeddedTriton(pool_repository, tmp_path_factory.mktemp(f"triton-{i}"), 0, None, secret=SECRET)
        for i in range(2)
    ]
    try:
        with ThreadPoolExecutor(len(servers)) as starting:
            list(starting.map(EmbeddedTriton.start, servers))
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def frontends(
    tritons: list[EmbeddedTriton],
    pool_repository: Path,
    version_2_checkpoint: Path,
    postgres: PostgresCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Server]]:
    """Two frontends on both servers; version 2 is then exported beside version 1, as an operator does."""
    from export.checkpoint import export_checkpoint

    settings = {
        "IMAGEGEN_STORE": postgres.new_database(),
        "IMAGEGEN_SESSION_SECRET": "one secret for every replica",
        "IMAGEGEN_TRITON_URL": ",".join(triton.url for triton in tritons),
        "IMAGEGEN_TRITON_SECRET": SECRET,
        "IMAGEGEN_TRITON_TIMEOUT": str(TRITON_TIMEOUT_S),
        "IMAGEGEN_REQUESTS_PER_MINUTE": "100000",
        "IMAGEGEN_CONCURRENT_GENERATIONS": "100",
    }
    with contextlib.ExitStack() as stack:
        servers = []
        for name in ("frontend-a", "frontend-b"):
            server = start_server(pool_repository, tmp_path_factory.mktemp(name), settings=settings)
            stack.callback(stop_server, server)
            servers.append(server)
        export_checkpoint(version_2_checkpoint, MODEL, pool_repository, version=2)
        yield servers


@pytest.fixture
def pool_on_version_1(frontends: list[Server], tritons: list[EmbeddedTriton]) -> list[Server]:
    """Every server serving, version 1 routed (written in the routing table by a switch) while version 2
    is the latest on disk: what a restarted Triton loads by itself."""
    wait_until(lambda: all(serving(frontend) == 2 for frontend in frontends), 120, "both servers serving")
    route = followed_route(frontends[0])
    if route["generation"] == 0 or route["stable_version"] != 1 or any(loaded_versions(t) != {1} for t in tritons):
        # Only a switch unloads what its route does not serve (a restarted server loaded version 2).
        admin(frontends[0], "rollout", MODEL, "--version", "2")
        admin(frontends[0], "rollout", MODEL, "--version", "1")
    assert [loaded_versions(triton) for triton in tritons] == [{1}, {1}]
    return frontends


def admin(frontend: Server, *args: str) -> str:
    return imagegen(frontend, *args, "--url", frontend.root, "--key", API_KEY)


def followed_route(frontend: Server) -> dict[str, Any]:
    """The route `frontend` follows, from its heartbeat: asked until it is listed (a frontend whose
    heartbeat is late, e.g. on a loaded machine, is left out of the status for a while)."""

    def route() -> dict[str, Any]:
        response = httpx.get(f"{frontend.base_url}/admin/status", headers=AUTH, timeout=60)
        assert response.status_code == 200, response.text
        ours = [f for f in response.json()["frontends"] if f["address"].endswith(f":{frontend.port}")]
        return ours[0]["serving"][MODEL] if ours else {}

    return wait_until(route, 60, "the frontend listed in the status by its heartbeat")


def serving(frontend: Server) -> int:
    """How many Triton servers hold every routed version, as the frontend's `/readyz` says."""
    response = httpx.get(f"{frontend.root}/readyz", timeout=30)
    return int(response.json()["triton_servers"]["serving"]) if response.status_code == 200 else 0


def loaded_versions(triton: EmbeddedTriton) -> set[int]:
    """Versions of the pipeline's denoiser that are ready in that server."""
    url = f"http://{triton.url}/v2/repository/index"
    index = httpx.post(url, json={}, headers={SECRET_HEADER: SECRET}, timeout=30).json()
    return {int(e["version"]) for e in index if e["name"] == f"{MODEL}_transformer" and e["state"] == "READY"}


def holds_v2_alone(status: str, tritons: list[EmbeddedTriton]) -> bool:
    """Whether `imagegen status` lists every server as serving the denoiser's v2 and no other version."""
    return all(
        re.search(rf"^{re.escape(triton.url)}\s+serving\s+\d+\s+{MODEL}_transformer\s+v2$", status, re.M)
        for triton in tritons
    )


def per_server(frontends: list[Server], metric: str) -> dict[str, float]:
    """`imagegen_triton_server_<metric>` per server, summed over the frontends' `/metrics`."""
    found: dict[str, float] = {}
    for frontend in frontends:
        exposition = httpx.get(f"{frontend.root}/metrics", timeout=30).text
        for server, value in re.findall(
            rf'^imagegen_triton_server_{metric}{{server="([^"]+)"}} (\S+)$', exposition, re.M
        ):
            found[server] = found.get(server, 0.0) + float(value)
    return found


def test_requests_spread_over_both_servers(frontends: list[Server], tritons: list[EmbeddedTriton]) -> None:
    wait_until(lambda: all(serving(frontend) == 2 for frontend in frontends), 120, "both servers serving")
    before = per_server(frontends, "requests_total")
    with Load(frontends, SMALL, CLIENTS) as load:
        load.wait_for(SPREAD_REQUESTS)
    after = per_server(frontends, "requests_total")
    # A generation and its image check each count: both are calls a server ran.
    counts = {triton.url: after[triton.url] - before.get(triton.url, 0.0) for triton in tritons}
    print(f"{len(load.results)} generations; requests per server: {counts}")
    assert load.statuses() == {200}
    total = sum(counts.values())
    assert all(count >= SPREAD_SHARE * total for count in counts.values()), counts


def test_a_rollout_moves_every_server_and_fails_no_request(
    pool_on_version_1: list[Server], tritons: list[EmbeddedTriton]
) -> None:
    frontends = pool_on_version_1
    with Load(frontends, SMALL, CLIENTS) as load:
        load.wait_for(2 * CLIENTS)
        out = admin(frontends[0], "rollout", MODEL, "--version", "2")
        load.wait_for(2 * CLIENTS)
    print(f"rollout over the pool: {out.strip()}; {len(load.results)} requests under load")
    assert load.statuses() == {200}
    assert load.versions() == {"1", "2"}
    assert [loaded_versions(triton) for triton in tritons] == [{2}, {2}]
    # The other frontend sees the servers by its probe (each PROBE_SECONDS): v1's unloading reaches it a probe later.
    wait_until(lambda: holds_v2_alone(admin(frontends[1], "status"), tritons), 60, "the status listing v2 alone")

    admin(frontends[1], "rollback", MODEL)
    assert [loaded_versions(triton) for triton in tritons] == [{1}, {1}]


def test_a_killed_triton_fails_its_requests_in_flight_and_rejoins_with_the_routed_version(
    pool_on_version_1: list[Server], tritons: list[EmbeddedTriton]
) -> None:
    frontends = pool_on_version_1
    victim, survivor = tritons
    pid = victim.pid
    assert pid is not None
    with Load(frontends, SMALL, CLIENTS) as load:
        load.wait_for(2 * CLIENTS)
        # Frozen first: the requests on it stay in flight there, however fast the machine, and once
        # its probes time out both frontends send the others to the survivor alone.
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: per_server(frontends, "up")[victim.url] == 0, 60, "both frontends taking it out")
        stuck = per_server(frontends, "in_flight")[victim.url]
        served_before = per_server(frontends, "requests_total")[survivor.url]
        answered = len(load.results)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        load.wait_for(2 * CLIENTS)
        wait_until(lambda: per_server(frontends, "in_flight").get(victim.url) == 0, 30, "its requests ended")
        wait_until(lambda: all(serving(frontend) == 2 for frontend in frontends), 120, "the restarted server back")
        rejoined = time.monotonic() - killed
        back = per_server(frontends, "requests_total")[victim.url]
        wait_until(lambda: per_server(frontends, "requests_total")[victim.url] > back, 60, "requests on it again")

    since_kill = load.results[answered:]
    failed = [answer for answer in since_kill if answer.status != 200]
    last_503 = max(answer.ended for answer in failed) - killed
    print(
        f"SIGKILL with {stuck:g} requests in flight on it: {len(failed)} ended with 503, the last "
        f"{last_503:.2f} s after the kill; {len(since_kill) - len(failed)} served meanwhile and after; "
        f"back in the pool with the routed version {rejoined:.1f} s after the kill"
    )
    assert stuck >= 1
    assert [answer.status for answer in failed] == [503] * int(stuck)  # those it held, and no other
    assert last_503 < TRITON_TIMEOUT_S  # ended by the kill (its connections drop at once), not the timeout
    assert per_server(frontends, "requests_total")[survivor.url] - served_before >= 2 * CLIENTS
    assert victim.pid != pid
    assert 1 in loaded_versions(victim)  # routed, loaded beside the version 2 it started with
    assert {answer.version for answer in since_kill if answer.status == 200} == {"1"}

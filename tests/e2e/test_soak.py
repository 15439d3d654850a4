"""A soak on the tiny model: 500 requests at concurrency 16 without an error, a leak of memory, file
descriptors or /dev/shm regions (the shared server: 4 running + 16 queued per model, so none is refused)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import httpx

from frontend.shared_memory import IDLE_REGIONS, SHM, region_prefix
from tests.harness import API_KEY, Server, wait_until

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BODY = {"model": "flux-schnell", "prompt": "a lantern on a pier", "width": 128, "height": 128}
CONCURRENCY = 16
REQUESTS = 500
POOL_GROWTH = 8
"""Sockets the Triton connection pool may add when the soak's timing overlaps more Triton calls than
the warm-up did (up to 4 running generations, two encoders each); a leak would add one per request."""
WARM_UP = 64
"""Requests before the baseline: allocator arenas, thread pools and connection pools fill up first."""


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def open_fds(pid: int) -> tuple[int, int, int]:
    """(sockets, shared memory regions of its own, every other descriptor); one closed while the
    directory is read is not counted."""
    targets = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            targets.append(os.readlink(fd))
    sockets = sum(target.startswith("socket:") for target in targets)
    regions = sum(target.startswith(f"{SHM}/{region_prefix(pid)}") for target in targets)
    return sockets, regions, len(targets) - sockets - regions


def shm_regions(pid: int) -> int:
    return len(list(Path("/dev/shm").glob(f"triton_embedded_{pid}_*")))


def run(server: Server, count: int) -> list[int]:
    """Statuses of `count` requests sent by CONCURRENCY clients at once."""

    async def clients() -> list[int]:
        pending = iter(range(count))
        statuses: list[int] = []

        async def client(session: httpx.AsyncClient) -> None:
            for _ in pending:
                response = await session.post(f"{server.base_url}/images/generations", json=BODY)
                statuses.append(response.status_code)

        async with httpx.AsyncClient(headers=AUTH, timeout=60) as session:
            await asyncio.gather(*(client(session) for _ in range(CONCURRENCY)))
        return statuses

    return asyncio.run(clients())


def client_connections_closed(server: Server) -> bool:
    """Whether the frontend has closed every connection its clients closed: none of its sockets on the
    API port waits in CLOSE_WAIT (the tests' closed clients are then gone from its descriptors)."""
    close_wait = "08"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == server.port and state == close_wait:
                return False
    return True


def test_soak_has_no_errors_and_leaks_nothing(server: Server) -> None:
    pid = server.process.pid
    assert set(run(server, WARM_UP)) == {200}
    wait_until(lambda: client_connections_closed(server), 30, "the warm-up's connections closed")
    before = rss_kib(pid), open_fds(pid), shm_regions(pid)

    started = time.monotonic()
    statuses = run(server, REQUESTS)
    seconds = time.monotonic() - started
    wait_until(lambda: client_connections_closed(server), 30, "the soak's connections closed")
    after = rss_kib(pid), open_fds(pid), shm_regions(pid)

    print(
        f"soak: {REQUESTS} requests in {seconds:.1f} s; frontend RSS {before[0]} -> {after[0]} KiB "
        f"({(after[0] / before[0] - 1) * 100:+.1f}%), (sockets, its regions, other fds) {before[1]} -> {after[1]}, "
        f"Python stubs' /dev/shm regions {before[2]} -> {after[2]}"
    )
    assert statuses.count(200) == REQUESTS
    assert after[0] < before[0] * 1.10
    assert after[1][0] <= before[1][0] + POOL_GROWTH
    assert after[1][1] <= IDLE_REGIONS  # all idle now, in a pool that keeps at most that many
    assert after[1][2] <= before[1][2]
    assert after[2] == before[2]

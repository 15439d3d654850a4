"""`imagegen serve` stops cleanly: Ctrl-C or SIGTERM leaves no Triton, no stub and no /dev/shm region."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Server, alive, descendants, start_server, stop_server

SHM = Path("/dev/shm")


def regions(server: Server) -> list[Path]:
    """The /dev/shm regions of the server's Python backend stubs: the embedded Triton names them after
    the serving process."""
    return list(SHM.glob(f"triton_embedded_{server.process.pid}_*"))


@pytest.fixture
def server_to_stop(model_repository: Path, tmp_path: Path) -> Iterator[Server]:
    """A server the test stops itself. However the test ends (a failed assert included), nothing of
    it outlives the test: a server still running is stopped, then any process it had started that
    still runs is killed and any region left is removed, so a failure here leaks nothing into the
    tests after it."""
    server = start_server(model_repository, tmp_path)
    started = descendants(server.process.pid)
    try:
        yield server
    finally:
        try:
            if server.process.poll() is None:
                stop_server(server)
        finally:
            for pid in started:
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            for region in regions(server):
                region.unlink(missing_ok=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_serve_leaves_nothing_running(server_to_stop: Server, signum: int) -> None:
    server = server_to_stop
    processes = descendants(server.process.pid)
    assert any("tritonserver" in Path(f"/proc/{pid}/cmdline").read_text() for pid in processes)
    assert regions(server), "the Python backend stubs hold /dev/shm regions while serving"

    server.process.send_signal(signum)
    server.process.wait(timeout=60)

    assert not [pid for pid in processes if alive(pid)]
    assert not regions(server)

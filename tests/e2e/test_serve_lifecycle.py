"""`imagegen serve` stops cleanly: Ctrl-C or SIGTERM leaves no Triton, no stub and no /dev/shm region."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.harness import alive, descendants, start_server

SHM = Path("/dev/shm")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_serve_leaves_nothing_running(model_repository: Path, tmp_path: Path, signum: int) -> None:
    server = start_server(model_repository, tmp_path)
    processes = descendants(server.process.pid)
    # The embedded Triton names its stubs' regions after the serving process.
    regions = f"triton_embedded_{server.process.pid}_*"
    assert any("tritonserver" in Path(f"/proc/{pid}/cmdline").read_text() for pid in processes)
    assert list(SHM.glob(regions)), "the Python backend stubs hold /dev/shm regions while serving"

    server.process.send_signal(signum)
    server.process.wait(timeout=60)

    assert not [pid for pid in processes if alive(pid)]
    assert not list(SHM.glob(regions))

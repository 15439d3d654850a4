"""`imagegen serve` stops cleanly: Ctrl-C or SIGTERM leaves no Triton, no stub and no /dev/shm region."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.harness import start_server

SHM = Path("/dev/shm")


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children")
        if children.exists():
            kids = {int(child) for child in children.read_text().split()}
            found |= kids
            pending.extend(kids)
    return found


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_serve_leaves_nothing_running(model_repository: Path, tmp_path: Path, signum: int) -> None:
    regions_before = set(os.listdir(SHM))
    server = start_server(model_repository, tmp_path)
    processes = descendants(server.process.pid)
    assert any("tritonserver" in Path(f"/proc/{pid}/cmdline").read_text() for pid in processes)
    assert set(os.listdir(SHM)) - regions_before, "the Python backend stubs hold /dev/shm regions while serving"

    server.process.send_signal(signum)
    server.process.wait(timeout=60)

    assert not [pid for pid in processes if alive(pid)]
    assert set(os.listdir(SHM)) - regions_before == set()

"""`imagegen serve` as the benchmarks run it: as a user runs it (embedded Triton), on free ports, with its
own state folder beside the benchmark's model repository, so it never meets a running `make serve` or
the tests, and with limits no benchmark reaches."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Serving:
    url: str
    """The API's base URL, e.g. http://127.0.0.1:PORT/v1."""
    process: subprocess.Popen[bytes]
    """`imagegen serve`: the embedded tritonserver and its backend stubs run below it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(root: Path, key: str, settings: Mapping[str, str] | None = None) -> Iterator[Serving]:
    """`imagegen serve` on `root`/model_repository, its state in `root`/state; `settings`: more
    `IMAGEGEN_*` variables."""
    state = root / "state"
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = os.environ | {
        "IMAGEGEN_HOME": str(state),
        "IMAGEGEN_API_KEY": key,
        "PORT": str(port),
        "IMAGEGEN_TRITON_HTTP_PORT": "0",
        "IMAGEGEN_TRITON_METRICS_PORT": "0",
        "IMAGEGEN_REQUESTS_PER_MINUTE": "100000",
        "IMAGEGEN_CONCURRENT_GENERATIONS": "100",
        **(settings or {}),
    }
    command = [
        str(Path(sys.executable).parent / "imagegen"),
        "serve",
        "--model-repository",
        str(root / "model_repository"),
    ]
    with (state / "serve.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(process, f"http://127.0.0.1:{port}", state / "serve.log")
        yield Serving(f"http://127.0.0.1:{port}/v1", process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


def wait_until_ready(process: subprocess.Popen[bytes], root_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"imagegen serve exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{root_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"imagegen serve was not ready within {STARTUP_TIMEOUT_S:g} s; see {log}")

"""Start and stop the real `imagegen serve` over a socket, as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

API_KEY = "sk-test-imagegen-0123456789abcdef"
TINY_MODELS = ("flux-schnell", "flux-dev", "sdxl")
"""Built, exported and served by the session fixtures under their family name (the public model id)."""
STARTUP_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_server(
    repository: Path, state_dir: Path, api_key: str = API_KEY, settings: Mapping[str, str] | None = None
) -> Server:
    """`imagegen serve` as a user runs it, with an embedded Triton on free ports; `settings`: more
    `IMAGEGEN_*` variables."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "IMAGEGEN_HOME": str(state_dir),
        "IMAGEGEN_API_KEY": api_key,
        "IMAGEGEN_TRITON_HTTP_PORT": "0",
        "IMAGEGEN_TRITON_METRICS_PORT": "0",
        "PORT": str(port),
        **(settings or {}),
    }
    log = state_dir / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "imagegen"), "serve", "--model-repository", str(repository)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, state_dir, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"imagegen serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{server.root}/healthz", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"imagegen serve did not answer within {STARTUP_TIMEOUT} s:\n{log.read_text()[-4000:]}")


def stop_server(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=60)


def imagegen(server: Server, *args: str, stdin: str | None = None) -> str:
    """`imagegen ARGS` on the server's store, as an operator runs it beside the server; its output."""
    env = {**os.environ, "IMAGEGEN_HOME": str(server.state_dir)}
    command = [str(Path(sys.executable).parent / "imagegen"), *args]
    return subprocess.run(command, env=env, input=stdin, capture_output=True, text=True, check=True).stdout


def descendants(pid: int) -> set[int]:
    """Every process below `pid`: the embedded tritonserver and its Python backend stubs."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        # Each thread lists the children it started (the Triton supervisor's thread restarts it).
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = {int(child) for child in children.read_text().split()}
            except (FileNotFoundError, ProcessLookupError):  # the thread ended between listing and reading
                continue
            found |= kids
            pending.extend(kids)
    return found


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie has ended)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


def embedded_triton_pid(server: Server) -> int:
    """The tritonserver process that `server` started (a new one after each restart)."""
    for pid in descendants(server.process.pid):
        try:
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except (FileNotFoundError, ProcessLookupError):  # a backend stub that ended since it was listed
            continue
        if program.endswith(b"tritonserver"):
            return pid
    raise LookupError("the server runs no embedded tritonserver")


def embedded_triton_url(server: Server) -> str:
    """host:port of the tritonserver that `server` started (its ports were chosen free)."""
    arguments = Path(f"/proc/{embedded_triton_pid(server)}/cmdline").read_bytes().split(b"\0")
    port = next(a for a in arguments if a.startswith(b"--http-port=")).split(b"=")[1]
    return f"127.0.0.1:{port.decode()}"

"""Start and stop the real `imagegen serve` over a socket, as a user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

API_KEY = "sk-test-pDqBJ8qACY6yrD4FyfcNtlHW_rf0CEVURsiCe3McDi9NWy7M"
"""As strong as a generated key: the server refuses a weaker IMAGEGEN_API_KEY."""
SECRETS_KEY = "l3Dk0Dk1hFJ0oFg4dYk7nNQmXq3qvC0p3H3n5m1yS3E="
"""Every test server's IMAGEGEN_SECRETS_KEY (frontend/sealing.py): replicas sharing a PostgreSQL
store must share one, as production's do."""
TINY_MODELS = ("flux-schnell", "flux-dev", "sdxl", "flux-kontext")
"""Built, exported and served by the session fixtures under their family name (the public model id)."""
STARTUP_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
"""The frontend's shutdown grace (30 s) and Triton's stop (15 s at most), with room to spare."""
TRITON_RUNS_S = 0.005
"""How long `paused_mid_flight` lets Triton run between two reads: a generation advances a few of its
denoising steps at most (each a round trip to Triton) of the tens the tests' generations run."""

T = TypeVar("T")


def own_environment() -> dict[str, str]:
    """The caller's environment without its `IMAGEGEN_*` settings: a store or Triton URL in the shell
    must never be the one a test writes into."""
    return {name: value for name, value in os.environ.items() if not name.startswith("IMAGEGEN_")}


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
    settings: Mapping[str, str]
    """The `IMAGEGEN_*` variables it was started with: its store, its Triton, its limits."""

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
    own_settings = {
        "IMAGEGEN_HOME": str(state_dir),
        "IMAGEGEN_API_KEY": api_key,
        "IMAGEGEN_SECRETS_KEY": SECRETS_KEY,
        "IMAGEGEN_TRITON_HTTP_PORT": "0",
        "IMAGEGEN_TRITON_METRICS_PORT": "0",
        **(settings or {}),
    }
    env = {**own_environment(), **own_settings, "PORT": str(port)}
    log = state_dir / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "imagegen"), "serve", "--model-repository", str(repository)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, which stop_server can kill whole
        )
    server = Server(process, port, state_dir, log, own_settings)
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
    """SIGTERM, as a user stops it; a server that has not stopped after STOP_TIMEOUT is killed with
    everything it started (Triton and its stubs, in process groups of their own) and the stop fails."""
    processes = descendants(server.process.pid)
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        for pid in {server.process.pid, *processes, *descendants(server.process.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)  # never the tests' group: each server has its own
        server.process.wait()
        for region in Path("/dev/shm").glob(f"triton_embedded_{server.process.pid}_*"):
            region.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def serving(
    repository: Path, state_dir: Path, api_key: str = API_KEY, settings: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """A server for the block, stopped however the block ends (a failed assert included)."""
    server = start_server(repository, state_dir, api_key, settings)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            stop_server(server)


def wait_until(check: Callable[[], T], within: float, what: str, interval: float = 0.02) -> T:
    """Poll `check` until it returns something true, and return that: the way a test waits for a state
    instead of sleeping for it. `within` only bounds a wait for something that never happens."""
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not seen within {within} s"
        time.sleep(interval)
    return result


@contextlib.contextmanager
def triton_paused(server: Server) -> Iterator[int]:
    """The server's Triton frozen (SIGSTOP) for the block: every call to it waits, so a generation in
    flight stays where it is however fast the machine is. Resumed when the block ends."""
    pid = embedded_triton_pid(server)
    with _stopped(pid):
        yield pid


@contextlib.contextmanager
def _stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # the test killed it
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def paused_mid_flight(
    server: Server, progress_ids: Iterable[str], every: bool = False
) -> Iterator[dict[str, str | None]]:
    """Wait until one of the generations sent with these `X-Progress-Id`s (`every`: each of them) has
    run a step and has more to run, and hold them all there: Triton paused for the block, as
    `triton_paused`. Yields each one's stage then (None: not admitted yet).

    Their stages are read with Triton paused, and it runs only for `TRITON_RUNS_S` between two reads:
    a generation moves a few steps between reads however slow the reads are (its frontend busy), so
    one with tens of steps to run is not missed, nor several at once."""
    ids = list(progress_ids)
    seen = all if every else any
    pid = embedded_triton_pid(server)  # once: looking it up among the processes takes a while
    deadline = time.monotonic() + 60
    while True:
        with _stopped(pid):
            states = {i: progress(server, i) for i in ids}
            if seen(_mid_denoising(state) for state in states.values()):
                yield {i: None if state is None else state["stage"] for i, state in states.items()}
                return
        assert time.monotonic() < deadline, f"a generation's first step: not seen within 60 s ({states})"
        time.sleep(TRITON_RUNS_S)


def _mid_denoising(state: dict[str, Any] | None) -> bool:
    return state is not None and state["stage"] == "generating" and 1 <= state["step"] < state["steps"]


def progress(server: Server, progress_id: str, api_key: str = API_KEY) -> dict[str, Any] | None:
    """How far the generation sent with `X-Progress-Id: progress_id` has got, or None before it is
    admitted (GET /v1/images/progress/{id})."""
    request = urllib.request.Request(
        f"{server.base_url}/images/progress/{progress_id}", headers={"Authorization": f"Bearer {api_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def sent_generation(server: Server, body: Mapping[str, Any], progress_id: str) -> socket.socket:
    """A generation request sent over a socket of its own, the response left unread: closing the socket
    is a client that leaves mid-way."""
    payload = json.dumps(body)
    request = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"X-Progress-Id: {progress_id}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n{payload}"
    )
    client = socket.create_connection(("127.0.0.1", server.port))
    client.sendall(request.encode())
    return client


def shared_memory_regions(server: Server) -> list[Path]:
    """The /dev/shm regions the server's frontend holds for the generations under way: each one's
    constant denoiser inputs (frontend/shared_memory.py names them after the serving process)."""
    from frontend.shared_memory import SHM, region_prefix

    return list(Path(SHM).glob(f"{region_prefix(server.process.pid)}*"))


def load(server: Server, model: str) -> dict[str, int]:
    """The model's generations running and queued, from /metrics: unlike /readyz, it answers while
    Triton is down or paused."""
    with urllib.request.urlopen(f"{server.root}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    counts = {"running": 0, "queued": 0}
    for metric, key in (("imagegen_running", "running"), ("imagegen_queue_depth", "queued")):
        for line in exposition.splitlines():
            if line.startswith(f'{metric}{{model="{model}"}} '):
                counts[key] = int(float(line.split()[-1]))
    return counts


def denoised_samples(server: Server, denoiser: str) -> int:
    """Samples the Triton model `denoiser` has run, over all its calls and versions (its inference count)."""
    url = f"http://{embedded_triton_url(server)}/v2/models/{denoiser}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        return sum(int(stats["inference_count"]) for stats in json.load(response)["model_stats"])


def imagegen(server: Server, *args: str, stdin: str | None = None) -> str:
    """`imagegen ARGS` beside the server, with its settings (its store among them), as an operator runs
    it; its output."""
    env = {**own_environment(), **server.settings}
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


def embedded_triton_argument(server: Server, flag: str) -> str:
    """The value of `--flag=value` on the command line of the tritonserver that `server` started."""
    arguments = Path(f"/proc/{embedded_triton_pid(server)}/cmdline").read_text().split("\0")
    return next(a for a in arguments if a.startswith(f"{flag}=")).split("=", 1)[1]


def embedded_triton_url(server: Server) -> str:
    """host:port of the tritonserver that `server` started (its ports were chosen free)."""
    return f"127.0.0.1:{embedded_triton_argument(server, '--http-port')}"


def embedded_triton_secret(server: Server) -> str:
    """What the embedded Triton's model control requires in `frontend.triton.SECRET_HEADER`: the secret
    made at its start (SECURITY.md)."""
    return embedded_triton_argument(server, "--http-restricted-api").rsplit("=", 1)[1]

"""Launch and supervise the ``tritonserver`` binary that the nvidia-pytriton wheel ships.

Production runs NVIDIA's Triton image; local runs and CI have no Docker engine, so they serve the
same model repository with this embedded server. The wheel's native backends do not include ONNX
Runtime, so the project's Python-based backends (``backends/``) stand in for it; see DESIGN.md,
"Embedded Triton".
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from frontend.triton import SECRET_HEADER

logger = logging.getLogger(__name__)

_PROJECT_BACKENDS = Path(__file__).resolve().parent.parent / "backends"
_SHM = Path("/dev/shm")
_POLL_S = 0.1
_EXIT_TIMEOUT_S = 5
_LOG_TAIL_LINES = 40
_RESTART_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""Waits before successive restarts of a server that died; the last repeats until one succeeds."""
# Triton logs these at once but exits only after unloading the other models (seconds later).
# Example: E1126 14:29:22.5 5224 model_lifecycle.cc:642] "failed to load 'x' version 1: ..."
_FATAL_LINE = re.compile(r'^E.*\] "(failed to load |Poll failed for model directory )', re.MULTILINE)
# Error lines worth quoting first; the NVML/DCGM/CUDA ones are expected on a CPU host.
_ERROR_LINE = re.compile(r"^(E\d|\[libprotobuf ERROR|error: )")
_HARMLESS = ("CudaDriverHelper", "NVML", "DCGM")
_TRACES_PER_FILE = 100
"""Triton keeps traces in memory and writes them in files of this many (the rest when it stops)."""
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
"""Triton's HTTP APIs that need the secret header: those that load or unload models (a load may send
the model's files, code included), map shared memory, or point Triton's trace and log files
anywhere. Health, metadata, configs, statistics and inference stay open to whoever reaches the port."""


def restricted_api_arg(secret: str) -> str:
    """The flag (tritonserver 2.51+) making RESTRICTED_APIS answer 403 without `SECRET_HEADER: secret`."""
    return f"--http-restricted-api={','.join(RESTRICTED_APIS)}:{SECRET_HEADER}={secret}"


def trace_args(trace_file: Path, rate: int) -> list[str]:
    """Flags that make tritonserver (2.51) trace one inference request in `rate`, with timestamps and
    the request id the frontend sends, into `<trace_file>.0`, `.1`, ..."""
    return [
        f"--trace-config=triton,file={Path(trace_file).resolve()}",
        f"--trace-config=triton,log-frequency={_TRACES_PER_FILE}",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=rate={rate}",
    ]


class EmbeddedTritonError(RuntimeError):
    """The server could not start (or exited); the message ends with the tail of its log."""


def _site_packages() -> Path:
    # find_spec locates the package without importing it (importing pytriton takes ~0.5 s).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise EmbeddedTritonError("the nvidia-pytriton package is not installed")
    return Path(spec.origin).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        # Same option as the server's listener, so a port in TIME_WAIT is not reported busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise EmbeddedTritonError(f"port {port} is already in use: {exc}") from exc


def _exit_status(process: subprocess.Popen[bytes]) -> str | None:
    """How the process ended, or None while it runs; it is left unreaped (see stop())."""
    result = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return f"exited with code {result.si_status}"
    return f"was killed by signal {result.si_status}"


def _group_running(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies are dead already)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the parenthesised command name: state, ppid, pgrp, ...
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # the process is gone
            continue
        if state != "Z" and int(pgrp) == pgid:
            return True
    return False


class EmbeddedTriton:
    """Owns one ``tritonserver`` child process, its process group and its /dev/shm regions, and
    restarts it (with backoff) if it dies while it should run.

    Ports given as 0 are replaced by free ones; ``grpc_port``/``metrics_port`` of None disable those
    endpoints. Each start() makes a new ``secret`` unless one is given (servers of one pool share
    theirs): without it in ``SECRET_HEADER``, another local user cannot load, unload or replace
    models through the port (RESTRICTED_APIS). ``state_dir``
    holds the assembled backend folder and ``triton.log``; two running servers must not share it.
    """

    def __init__(
        self,
        model_repository: Path,
        state_dir: Path,
        http_port: int = 8001,
        metrics_port: int | None = 8002,
        grpc_port: int | None = None,
        extra_args: Sequence[str] = (),
        secret: str | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.http_port = http_port or _free_port()
        self.metrics_port = None if metrics_port is None else metrics_port or _free_port()
        self.grpc_port = None if grpc_port is None else grpc_port or _free_port()
        self.extra_args = tuple(extra_args)
        self.log_path = self.state_dir / "triton.log"
        self._given_secret = secret
        self.secret = ""
        # Unique per instance, so stop() removes exactly this server's regions.
        self._shm_prefix = f"triton_embedded_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._ready_timeout = 120.0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The running tritonserver's process id (another after each restart); None while none runs."""
        return None if self._process is None else self._process.pid

    @property
    def url(self) -> str:
        """HTTP endpoint in the form tritonclient wants (no scheme)."""
        return f"127.0.0.1:{self.http_port}"

    def start(self, ready_timeout: float = 120.0) -> None:
        """Launch the server; return once it and every model in the repository are ready, and
        supervise it from then on."""
        if self._process is not None:
            raise EmbeddedTritonError("this server is already running")
        if not self.model_repository.is_dir():
            raise EmbeddedTritonError(f"model repository not found: {self.model_repository}")
        self._ready_timeout = ready_timeout
        self.secret = self._given_secret or secrets.token_urlsafe(32)
        self._stopping.clear()
        self._launch()
        self._supervisor = threading.Thread(target=self._supervise, name="triton-supervisor", daemon=True)
        self._supervisor.start()

    def _launch(self) -> None:
        """Start the process and wait until it is ready; a failed start leaves nothing running."""
        for port in (self.http_port, self.metrics_port, self.grpc_port):
            if port is not None:
                _check_port_free(port)
        site_packages = _site_packages()
        backends = self._build_backend_dir(site_packages)
        command = [
            str(site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            # Configs are written in full; auto-complete costs ~1.3 s per model.
            "--disable-auto-complete-config",
            # Every model loads at start; then rollouts load and unload versions (frontend/rollout.py).
            "--model-control-mode=explicit",
            "--load-model=*",
            # A model that fails to load stops the server, so start() fails with its error.
            "--exit-on-error=true",
            "--log-verbose=0",
            # Triton's shutdown budget covers open client connections (idle keep-alive ones too),
            # in-flight requests and model unloading: the default 30 s makes stop() slow.
            f"--exit-timeout-secs={_EXIT_TIMEOUT_S}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            restricted_api_arg(self.secret),
        ]
        if self.grpc_port is None:
            command.append("--allow-grpc=false")
        else:
            command += ["--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}"]
        if self.metrics_port is None:
            command.append("--allow-metrics=false")
        else:
            command += ["--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}"]
        command += self.extra_args

        env = os.environ.copy()
        libs = [site_packages / "nvidia_pytriton.libs", sysconfig.get_config_var("LIBDIR"), env.get("LD_LIBRARY_PATH")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(str(path) for path in libs if path)
        # The stub runs the first python3 on PATH (isolated mode: PYTHONPATH is ignored).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])

        self.log_path.touch()
        self._log_offset = self.log_path.stat().st_size
        logger.info("starting tritonserver on %s (log: %s)", self.url, self.log_path)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            # Own session: stop() can kill the whole group, python backend stubs included.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,
            )
        try:
            self._wait_ready(started + self._ready_timeout)
        except BaseException:
            self._end(timeout=0)  # a failed start has nothing to finish gracefully
            raise
        logger.info("tritonserver ready after %.2f s", time.monotonic() - started)

    def _supervise(self) -> None:
        """Restart the server whenever it dies, waiting longer after each failed restart."""
        failures = 0
        while not self._stopping.wait(_POLL_S):
            assert self._process is not None
            status = _exit_status(self._process)
            if status is None:
                continue
            logger.error("tritonserver %s; restarting it", status)
            self._end(timeout=0)  # its stubs and /dev/shm regions
            while not self._stopping.wait(_RESTART_DELAYS_S[min(failures, len(_RESTART_DELAYS_S) - 1)]):
                try:
                    self._launch()
                except EmbeddedTritonError as exc:
                    failures += 1
                    logger.error("restarting tritonserver failed (attempt %d): %s", failures, exc)
                    continue
                failures = 0
                break

    def stop(self, timeout: float = 15.0) -> None:
        """Stop supervising, then shut down gracefully (SIGTERM), SIGKILL the process group after
        ``timeout``, free /dev/shm.

        A graceful stop takes ~2-4 s (Triton unloads the models one poll second at a time), up to
        ``_EXIT_TIMEOUT_S`` while clients keep connections open; ``timeout=0`` kills at once.
        """
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()  # a restart under way notices _stopping within a poll
            self._supervisor = None
        self._end(timeout)

    def _end(self, timeout: float) -> None:
        process, self._process = self._process, None
        if process is not None:
            if timeout > 0 and _exit_status(process) is None:
                # Only the server gets SIGTERM: it finalizes its models and ends its stubs itself.
                os.kill(process.pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while _exit_status(process) is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _exit_status(process) is None:
                    logger.warning("tritonserver did not stop within %.1f s; killing it", timeout)
            # The server is not reaped yet (its zombie holds the group id), so this cannot hit a
            # recycled group; it kills the server if still alive and any stubs left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            # SIGKILL is asynchronous: return once no stub still runs (at most ~0.2 s seen).
            deadline = time.monotonic() + 2.0
            while _group_running(process.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            process.wait()
        for region in _SHM.glob(f"{self._shm_prefix}*"):
            region.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _build_backend_dir(self, site_packages: Path) -> Path:
        """Assemble the single ``--backend-directory`` Triton accepts, from copies (it rejects a
        symlinked libtriton_python.so); rebuilt on each start so backend edits are picked up."""
        triton = site_packages / "pytriton" / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = triton / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise EmbeddedTritonError(f"nvidia-pytriton ships no python backend stub for Python {version}")
        backends = self.state_dir / "backends"
        shutil.rmtree(backends, ignore_errors=True)
        (backends / "python").mkdir(parents=True)
        python_backend = triton / "backends" / "python"
        for source in (python_backend / "libtriton_python.so", python_backend / "triton_python_backend_utils.py", stub):
            shutil.copy2(source, backends / "python" / source.name)
        for model_py in sorted(_PROJECT_BACKENDS.glob("*/model.py")):
            (backends / model_py.parent.name).mkdir()
            shutil.copy2(model_py, backends / model_py.parent.name / "model.py")
        return backends

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None
        while True:
            if self._stopping.is_set():
                raise EmbeddedTritonError("stopped while starting")
            if _FATAL_LINE.search(self._run_log()):
                raise self._error("a model failed to load")
            status = _exit_status(self._process)
            if status is not None:
                raise self._error(f"tritonserver {status} during start-up")
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise self._error("tritonserver was not ready in time")
            time.sleep(_POLL_S)

    def _ready(self) -> bool:
        base = f"http://{self.url}/v2"
        try:
            with urllib.request.urlopen(f"{base}/health/ready", timeout=1.0) as response:
                if response.status != 200:
                    return False
            request = urllib.request.Request(
                f"{base}/repository/index", data=b"{}", headers={SECRET_HEADER: self.secret}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=1.0) as response:
                models = json.load(response)
        except (OSError, ValueError):  # not listening yet, 503 (an HTTPError), a partial answer
            return False
        return all(model.get("state") == "READY" for model in models)

    def _run_log(self) -> str:
        """What this run wrote to the log (the file is appended to across runs)."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode("utf-8", errors="replace")

    def _error(self, reason: str) -> EmbeddedTritonError:
        lines = self._run_log().splitlines()
        errors = [
            line.replace("\\n", "\n    ")  # Triton escapes a Python traceback's newlines
            for line in lines
            if _ERROR_LINE.match(line) and not any(h in line for h in _HARMLESS)
        ]
        # The model/backend status tables are wide and repeat the log lines.
        tail = [line for line in lines if not line.startswith(("|", "+"))][-_LOG_TAIL_LINES:]
        return EmbeddedTritonError("\n".join([f"{reason}:", *errors, f"--- tail of {self.log_path} ---", *tail]))

"""What `make bench` runs: the server and its two in-process peers, same weights, steps and size, back
to back in one run, then one comparison table and, as the very last line, the four ratios.

- Y `single_latency_vs_ort`: the server's p50 latency, one request at a time, ÷ the ORT loop's (bench
  preset, 1024x1024). Lower is better; 1.0 is the floor.
- X `throughput_vs_ort_sequential`: the server's images/s at concurrency 8 ÷ the ORT loop's run one
  image after another (bench preset, 1024x1024).
- S `throughput_small_vs_ort_sequential`: the same where per-request overhead dominates (the tiny
  flux-schnell at 256x256).
- Z `throughput_vs_diffusers`: the server's images/s at concurrency 8 ÷ diffusers' FluxPipeline run
  one image after another (bench preset, 1024x1024).

The server is `imagegen serve` as a user runs it (embedded Triton, free ports, its own state folder),
measured over HTTP by `imagegen bench`'s client; the peers run in this process while it idles, so
neither competes with the other for the CPU. The peers end with the server's own PNG encoding: all
three deliver the same bytes, and the ratios measure what serving adds around the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.peers import DiffusersPeer, OrtPeer
from frontend.bench import PROMPT, BenchConfig, BenchResult, format_table, run_bench
from frontend.imaging import encode_image_base64

CONCURRENCY = 8
STEPS = 4  # flux-schnell's default
STARTUP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Case:
    """One model and size, measured on the server and on the peers."""

    model: str  # the public model id in the bench repository, and the checkpoint folder's name
    size: int
    requests: int  # per concurrency level on the server, and images per peer
    diffusers: bool  # whether diffusers (slow on a CPU) runs this case too


BENCH = Case("flux-schnell-bench", 1024, requests=16, diffusers=True)
SMALL = Case("flux-schnell", 256, requests=64, diffusers=False)


@dataclass(frozen=True)
class PeerResult:
    peer: str
    images: int
    seconds: float
    latency_p50_ms: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(".imagegen/bench"), help="checkpoints/, model_repository/")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the requests of every case")
    args = parser.parse_args()
    cases = [
        Case(c.model, c.size, max(CONCURRENCY, round(c.requests * args.scale)), c.diffusers) for c in (BENCH, SMALL)
    ]
    served: dict[str, list[BenchResult]] = {}
    peers: dict[str, list[PeerResult]] = {}
    key = "sk-bench-" + secrets.token_hex(16)
    with running_server(args.root, key) as url:
        # Each case's server and peers back to back, so a neighbour's load on a shared machine falls
        # on both sides of a ratio alike; the idle server takes no CPU while the peers run.
        for case in cases:
            config = BenchConfig(
                url, key, case.model, case.size, case.size, STEPS, 1, case.requests, (1, CONCURRENCY), warmup=2
            )
            print(f"server: {case.model} {case.size}x{case.size}", file=sys.stderr)
            served[case.model] = asyncio.run(run_bench(config))
            peers[case.model] = measure_peers(args.root, case, max(2, case.requests // 2))
    report(served, peers, args.root / "results.json")


@contextmanager
def running_server(root: Path, key: str) -> Iterator[str]:
    """`imagegen serve` on the bench repository, on free ports, with limits no benchmark reaches."""
    state = root / "state"
    state.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {
        "IMAGEGEN_HOME": str(state),
        "IMAGEGEN_API_KEY": key,
        "PORT": str(port),
        "IMAGEGEN_TRITON_HTTP_PORT": "0",
        "IMAGEGEN_TRITON_METRICS_PORT": "0",
        "IMAGEGEN_REQUESTS_PER_MINUTE": "100000",
        "IMAGEGEN_CONCURRENT_GENERATIONS": "100",
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
        yield f"http://127.0.0.1:{port}/v1"
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


def measure_peers(root: Path, case: Case, images: int) -> list[PeerResult]:
    ort_peer = OrtPeer(root / "model_repository", case.model)
    peers: dict[str, Callable[[int], str]] = {"onnxruntime loop": lambda seed: encoded(ort_peer, case, seed)}
    if case.diffusers:
        diffusers_peer = DiffusersPeer(root / "checkpoints" / case.model, ort_peer.t5_length)
        peers["diffusers FluxPipeline"] = lambda seed: encoded(diffusers_peer, case, seed)
    results = []
    for name, generate in peers.items():
        print(f"peer: {name}, {case.model} {case.size}x{case.size}", file=sys.stderr)
        generate(0)  # warm-up: sessions allocate their buffers on the first run
        count = images if name == "onnxruntime loop" else max(2, images // 4)
        latencies = []
        started = time.perf_counter()
        for _ in range(count):
            began = time.perf_counter()
            generate(0)
            latencies.append(time.perf_counter() - began)
        results.append(PeerResult(name, count, time.perf_counter() - started, statistics.median(latencies) * 1000))
    return results


def encoded(peer: OrtPeer | DiffusersPeer, case: Case, seed: int) -> str:
    """The peer's image as the server delivers it (PNG, base64, by the server's own function), so all
    three make the same bytes and the comparison is of everything around them."""
    return encode_image_base64(peer.generate(PROMPT, seed, case.size, case.size, STEPS), "png", None)


def report(served: dict[str, list[BenchResult]], peers: dict[str, list[PeerResult]], path: Path) -> None:
    rows = [f"{'who':<34} {'conc':>4} {'img/s':>7} {'p50 ms':>8} {'p99 ms':>8}"]
    for case in (BENCH, SMALL):
        title = f"{case.model} {case.size}x{case.size}, {STEPS} steps"
        rows.append(f"-- {title}")
        rows += [
            f"{'server':<34} {r.concurrency:>4} {r.images_per_second:>7.2f} {r.latency_p50_ms:>8.1f} "
            f"{r.latency_p99_ms:>8.1f}"
            for r in served[case.model]
        ]
        rows += [
            f"{p.peer + ' (in-process)':<34} {1:>4} {p.images_per_second:>7.2f} {p.latency_p50_ms:>8.1f} {'-':>8}"
            for p in peers[case.model]
        ]
    bench_server = {r.concurrency: r for r in served[BENCH.model]}
    small_server = {r.concurrency: r for r in served[SMALL.model]}
    bench_peers = {p.peer: p for p in peers[BENCH.model]}
    small_ort = next(p for p in peers[SMALL.model] if p.peer == "onnxruntime loop")
    ratios = {
        "single_latency_vs_ort": bench_server[1].latency_p50_ms / bench_peers["onnxruntime loop"].latency_p50_ms,
        "throughput_vs_ort_sequential": bench_server[CONCURRENCY].images_per_second
        / bench_peers["onnxruntime loop"].images_per_second,
        "throughput_small_vs_ort_sequential": small_server[CONCURRENCY].images_per_second / small_ort.images_per_second,
        "throughput_vs_diffusers": bench_server[CONCURRENCY].images_per_second
        / bench_peers["diffusers FluxPipeline"].images_per_second,
    }
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}"
    path.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine,
                "server": {model: [asdict(r) for r in results] for model, results in served.items()},
                "peers": {model: [asdict(p) for p in results] for model, results in peers.items()},
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print("\n".join(["", f"machine: {machine}", *rows, "", "server, per concurrency (imagegen bench):"]))
    for case in (BENCH, SMALL):
        print(f"-- {case.model} {case.size}x{case.size}\n{format_table(served[case.model])}")
    print(" ".join(f"{name}={value:.2f}" for name, value in ratios.items()))


if __name__ == "__main__":
    main()

"""`make bench-gpu-sim`: what the server adds at a GPU's pace, on a simulated H200.

SDXL (30 steps, classifier-free guidance) and FLUX.1-schnell (4 steps) are exported at their published
sizes with `imagegen export --simulate` (export/simulate.py: the real tensor contracts, each component
sleeping what benchmarks/h200_costs.json says an H200 takes for the batch it is handed, one component
at a time as on one GPU), served by `imagegen serve` as a user runs it, and loaded over HTTP with
1024x1024 requests of distinct prompts:

- A `sim_latency_overhead`: one request at a time, the requests' latency ÷ the simulated GPU time of
  what Triton ran for them (Triton's own statistics: executions by batch size, priced by the cost
  file). 1.0 is the floor: a server that adds nothing.
- B `sim_throughput_efficiency`: at concurrency 8, the server's images/s ÷ the images/s of a GPU that
  ran the same samples at the cost model's cheapest batch the concurrency allows, with no gap. 1.0 is
  the ceiling.
- C `cpu_ms_per_step`: the server's CPU time (the frontend, tritonserver and its backend stubs, from
  /proc) at concurrency 8 ÷ requests x steps.

The table has each model's figures; the last line the worse model's of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serving import Serving, free_port, running_server
from export.simulate import SIMULATION_FILE, Simulation, export_simulated
from frontend.bench import PROMPT, server_timing

COSTS = Path(__file__).resolve().parent / "h200_costs.json"
SIZE = "1024x1024"
STEPS = {"sdxl": 30, "flux-schnell": 4}
"""Model (its `--family` and its public id) -> the steps a request asks: SDXL base's and schnell's defaults."""
CONCURRENCY = 8
WARMUP = 2
Executions = dict[str, dict[int, int]]
"""Triton model -> batch size -> how many executions of that size it ran."""
TritonTimes = dict[str, float]
"""Triton's own time for the requests it answered, in ms, summed over its models: "request" (from
arrival to response), "queue" (waiting for the batcher and the model's instance)."""
PROCESSES = ("frontend", "triton", "stubs")
"""Whose CPU: `imagegen serve`, the embedded tritonserver, the Python backend stubs (one per model)."""
TIMINGS = ("generate", "inference", "encode")
"""The Server-Timing entries a request's time is split into (frontend/api/images.py)."""


@dataclass(frozen=True)
class Phase:
    """Requests at one concurrency: what the client saw, what Triton ran, what the server's CPU did."""

    concurrency: int
    latencies_s: list[float]
    timings: list[dict[str, float]]
    """Each response's Server-Timing entries, in milliseconds."""
    seconds: float
    executions: Executions
    triton_ms: TritonTimes
    cpu_s: dict[str, float]
    """By PROCESSES."""

    @property
    def images_per_second(self) -> float:
        return len(self.latencies_s) / self.seconds


@dataclass(frozen=True)
class Measured:
    """One model's two phases and its three figures."""

    model: str
    steps: int
    single: Phase
    loaded: Phase
    simulated_s: float
    """The GPU time of what Triton ran one request at a time, by the cost file."""
    ideal_s: float
    """The GPU time of what it ran at concurrency 8, every sample at its cheapest batch."""
    denoiser: str
    """Its denoiser's Triton model."""

    @property
    def latency_overhead(self) -> float:
        return sum(self.single.latencies_s) / self.simulated_s

    @property
    def throughput_efficiency(self) -> float:
        return self.ideal_s / self.loaded.seconds

    def cpu_ms_per_step(self, phase: Phase, processes: tuple[str, ...] = PROCESSES) -> float:
        return sum(phase.cpu_s[name] for name in processes) * 1000 / (len(phase.latencies_s) * self.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(".imagegen/gpu-sim"), help="model_repository/, state/")
    parser.add_argument("--costs", type=Path, default=COSTS)
    parser.add_argument("--timing", choices=("graph", "eager"), default="graph", help="the cost file's figures")
    parser.add_argument("--models", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--single", type=int, default=8, help="requests one at a time, per model")
    parser.add_argument("--requests", type=int, default=32, help="requests at --concurrency, per model")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--steps", type=int, help="every model's steps (default: each model's own)")
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        help="the denoisers' LoRA budget (the real export's default, 16, sends ~100 MB a sample each step)",
    )
    args = parser.parse_args()
    models = args.models.split(",")
    repository = args.root / "model_repository"
    shutil.rmtree(repository, ignore_errors=True)
    for model in models:
        export_simulated(args.costs, model, model, repository, timing=args.timing, lora_rank=args.lora_rank)
    triton_port = free_port()
    key = "sk-bench-" + secrets.token_hex(16)
    results = []
    # Every request of the benchmark's one key runs at once (the defaults, 2 a key and 4 a model, would
    # queue six of eight in the frontend, and the batcher would never see them).
    settings = {
        "IMAGEGEN_TRITON_HTTP_PORT": str(triton_port),
        "IMAGEGEN_RUNNING_PER_KEY": str(args.concurrency),
        "IMAGEGEN_RUNNING_PER_MODEL": str(args.concurrency),
    }
    with running_server(args.root, key, settings) as server:
        triton = f"http://127.0.0.1:{triton_port}"
        for model in models:
            print(f"{model}: {args.single} one at a time, {args.requests} at {args.concurrency}", file=sys.stderr)
            results.append(measure_model(server, triton, key, repository, model, args))
    report(results, args, args.root / "results.json")


def measure_model(
    server: Serving, triton: str, key: str, repository: Path, model: str, args: argparse.Namespace
) -> Measured:
    """Warm up, then `model`'s two phases, priced by its repository's cost tables."""
    steps = args.steps or STEPS[model]
    asyncio.run(requests(server.url, key, model, steps, WARMUP, WARMUP))
    single = measure(server, triton, key, model, steps, args.single, 1)
    loaded = measure(server, triton, key, model, steps, args.requests, args.concurrency)
    tables = cost_tables(repository)
    per_call = samples_per_call(single.executions)
    limits = {name: min(len(tables[name]), args.concurrency * per_call.get(name, 1)) for name in tables}
    ideal_ms = sum(
        sum(batch * count for batch, count in by_batch.items()) * best_ms_per_sample(tables[name], limits[name])
        for name, by_batch in loaded.executions.items()
        if name in tables
    )
    simulated_ms = priced_ms(single.executions, tables)
    return Measured(model, steps, single, loaded, simulated_ms / 1000, ideal_ms / 1000, denoiser(repository, model))


def measure(server: Serving, triton: str, key: str, model: str, steps: int, count: int, concurrency: int) -> Phase:
    """`count` requests, `concurrency` at a time, between two readings of Triton's statistics and of
    the server's CPU clock."""
    (executions, times), cpu = triton_statistics(triton), cpu_seconds(server.process.pid)
    started = time.perf_counter()
    answered = asyncio.run(requests(server.url, key, model, steps, count, concurrency))
    seconds = time.perf_counter() - started
    (ran, times_after), cpu_after = triton_statistics(triton), cpu_seconds(server.process.pid)
    difference = {
        name: {batch: n - executions.get(name, {}).get(batch, 0) for batch, n in by_batch.items()}
        for name, by_batch in ran.items()
    }
    latencies, timings = [latency for latency, _ in answered], [timing for _, timing in answered]
    used = {name: cpu_after[name] - cpu[name] for name in PROCESSES}
    in_triton = {name: times_after[name] - times[name] for name in times}
    return Phase(concurrency, latencies, timings, seconds, difference, in_triton, used)


async def requests(
    url: str, key: str, model: str, steps: int, count: int, concurrency: int
) -> list[tuple[float, dict[str, float]]]:
    """Each request's latency in seconds and Server-Timing; a prompt of its own, so none is answered
    from the prompt cache."""
    answered: list[tuple[float, dict[str, float]]] = []
    pending = iter(range(count))
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers, limits=limits) as client:

        async def worker() -> None:
            for number in pending:
                body = {"model": model, "prompt": f"{PROMPT}, study {secrets.token_hex(4)} {number}", "size": SIZE}
                started = time.perf_counter()
                response = await client.post("/images/generations", json=body | {"steps": steps, "seed": number})
                response.raise_for_status()
                answered.append((time.perf_counter() - started, server_timing(response.headers["server-timing"])))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered


def triton_statistics(triton: str) -> tuple[Executions, TritonTimes]:
    """Every model's executions by batch size so far, and Triton's time for the requests (its
    statistics extension)."""
    stats = httpx.get(f"{triton}/v2/models/stats", timeout=30).json()["model_stats"]
    executions: Executions = {}
    times = {"request": 0.0, "queue": 0.0}
    for model in stats:
        by_batch = executions.setdefault(model["name"], {})
        for entry in model["batch_stats"]:
            batch = int(entry["batch_size"])
            by_batch[batch] = by_batch.get(batch, 0) + int(entry["compute_infer"]["count"])
        times["request"] += int(model["inference_stats"]["success"]["ns"]) / 1e6
        times["queue"] += int(model["inference_stats"]["queue"]["ns"]) / 1e6
    return executions, times


def cost_tables(repository: Path) -> dict[str, list[float]]:
    """Simulated model -> its milliseconds by batch size, as its backend sleeps them."""
    return {
        path.parent.parent.name: list(Simulation.read(path).ms_by_batch)
        for path in repository.glob(f"*/*/{SIMULATION_FILE}")
    }


def denoiser(repository: Path, model: str) -> str:
    (found,) = (
        path.parent.parent.name
        for path in repository.glob(f"{model}_*/*/{SIMULATION_FILE}")
        if Simulation.read(path).role == "denoiser"
    )
    return found


def priced_ms(executions: Executions, tables: dict[str, list[float]]) -> float:
    return sum(
        tables[name][batch - 1] * count
        for name, by_batch in executions.items()
        if name in tables
        for batch, count in by_batch.items()
    )


def samples_per_call(executions: Executions) -> dict[str, int]:
    """Samples one request hands each model per call (SDXL's UNet: 2, the guidance's pair)."""
    per_call = {}
    for name, by_batch in executions.items():
        calls = sum(by_batch.values())
        if calls:
            per_call[name] = max(1, round(sum(batch * count for batch, count in by_batch.items()) / calls))
    return per_call


def best_ms_per_sample(table: list[float], max_batch: int) -> float:
    return min(table[batch - 1] / batch for batch in range(1, max_batch + 1))


def cpu_seconds(pid: int) -> dict[str, float]:
    """User and system CPU of `pid` (the frontend) and every process below it, by PROCESSES, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(PROCESSES, 0.0)
    for process in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
            program = Path(f"/proc/{process}/cmdline").read_bytes().split(b"\0")[0]
        except (FileNotFoundError, ProcessLookupError):  # ended since it was listed
            continue
        kind = "frontend" if process == pid else "triton" if program.endswith(b"tritonserver") else "stubs"
        used[kind] += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15 of proc(5)
    return used


def descendants(pid: int) -> Iterator[int]:
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(child) for child in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for kid in kids:
            yield kid
            yield from descendants(kid)


def report(results: list[Measured], args: argparse.Namespace, path: Path) -> None:
    """The table, the JSON beside it, and the last line: the worse model's figure of each."""
    rows = [
        f"{'model':<13} {'steps':>5} {'conc':>4} {'reqs':>4} {'img/s':>6} {'ideal':>6} {'p50 ms':>8} "
        f"{'sim ms':>7} {'A':>6} {'B':>6} {'cpu ms/step':>11} {'front/triton/stubs':>18}"
    ]
    split = [
        f"{'model':<13} {'conc':>4} {'p50 ms':>8} {'generate':>8} {'Triton calls':>12} {'in Triton':>9} "
        f"{'queued':>6} {'sim GPU':>7} {'encode':>6} {'denoiser batch':>14}"
    ]
    for result in results:
        for phase in (result.single, result.loaded):
            if phase is result.single:  # A's side: the simulated time of a request, and A
                ideal, sim_ms = "-", f"{result.simulated_s * 1000 / len(phase.latencies_s):.1f}"
                a, b = f"{result.latency_overhead:.3f}", "-"
            else:  # B's side: the ideal images/s, and B
                ideal, sim_ms = f"{len(phase.latencies_s) / result.ideal_s:.3f}", "-"
                a, b = "-", f"{result.throughput_efficiency:.3f}"
            by_process = "/".join(f"{result.cpu_ms_per_step(phase, (name,)):.1f}" for name in PROCESSES)
            rows.append(
                f"{result.model:<13} {result.steps:>5} {phase.concurrency:>4} {len(phase.latencies_s):>4} "
                f"{phase.images_per_second:>6.3f} {ideal:>6} {statistics.median(phase.latencies_s) * 1000:>8.1f} "
                f"{sim_ms:>7} {a:>6} {b:>6} {result.cpu_ms_per_step(phase):>11.2f} {by_process:>18}"
            )
            generate, inference, encode = (
                statistics.median(t.get(name, 0.0) for t in phase.timings) for name in TIMINGS
            )
            by_batch = phase.executions.get(result.denoiser, {})
            batch = sum(size * count for size, count in by_batch.items()) / max(1, sum(by_batch.values()))
            in_triton, queued = (phase.triton_ms[name] / len(phase.latencies_s) for name in ("request", "queue"))
            split.append(
                f"{result.model:<13} {phase.concurrency:>4} {statistics.median(phase.latencies_s) * 1000:>8.1f} "
                f"{generate:>8.1f} {inference:>12.1f} {in_triton:>9.1f} {queued:>6.1f} {sim_ms:>7} {encode:>6.1f} "
                f"{batch:>14.2f}"
            )
    figures = {
        "sim_latency_overhead": max(result.latency_overhead for result in results),
        "sim_throughput_efficiency": min(result.throughput_efficiency for result in results),
        "cpu_ms_per_step": max(result.cpu_ms_per_step(result.loaded) for result in results),
    }
    document: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "arguments": {name: str(value) for name, value in vars(args).items()},
        "models": [
            asdict(result)
            | {
                "sim_latency_overhead": result.latency_overhead,
                "sim_throughput_efficiency": result.throughput_efficiency,
                "cpu_ms_per_step": result.cpu_ms_per_step(result.loaded),
            }
            for result in results
        ],
        "figures": figures,
    }
    path.write_text(json.dumps(document, indent=2))
    title = f"simulated H200 ({args.timing} figures of {args.costs}), {SIZE}; CPU from /proc, ms a request-step"
    where = (
        "where a request's time goes, ms (Server-Timing's p50: generate, Triton calls at the frontend, encode; "
        "Triton's statistics, a request's mean: in Triton, of it queued)"
    )
    print("\n".join(["", title, *rows, "", where, *split, ""]))
    print(
        f"sim_latency_overhead={figures['sim_latency_overhead']:.3f} "
        f"sim_throughput_efficiency={figures['sim_throughput_efficiency']:.3f} "
        f"cpu_ms_per_step={figures['cpu_ms_per_step']:.2f}"
    )


if __name__ == "__main__":
    main()

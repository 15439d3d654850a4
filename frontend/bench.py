"""`imagegen bench`: load any running server with image requests and report what perf_analyzer
reports for models, for images: throughput, latency percentiles, time per step and queue time, per
concurrency (the last two from the server's `Server-Timing` header, where it sends one).

It is a client only: it measures what a user of the API sees, over HTTP, with the server's own
batching and queueing included.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

PROGRESS_WIDTH = 30
PROMPT = "a lighthouse on a cliff at dusk"


Outcome = tuple[float, dict[str, float]] | None
"""One request's latency in seconds and its `Server-Timing` entries; None where it failed."""


@dataclass(frozen=True)
class BenchConfig:
    url: str  # base URL, e.g. http://127.0.0.1:8000/v1
    key: str
    model: str
    width: int
    height: int
    steps: int | None
    n: int
    requests: int
    concurrencies: tuple[int, ...]
    warmup: int = 2


@dataclass(frozen=True)
class BenchResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    requests_per_second: float
    images_per_second: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    step_ms: float | None  # p50 of the server's `generate` time / steps (of the latency if it does not say)
    queue_p50_ms: float | None  # p50 of the time waiting for a running slot, as the server reports it


async def run_bench(config: BenchConfig) -> list[BenchResult]:
    async with client_for(config) as client:
        # Warm up concurrently: Triton's first batched executions allocate their buffers then.
        await _run(client, config, config.warmup, min(config.warmup, max(config.concurrencies)), show=False)
        return [await _run(client, config, config.requests, concurrency) for concurrency in config.concurrencies]


def client_for(config: BenchConfig) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max(config.concurrencies))
    headers = {"Authorization": f"Bearer {config.key}"}
    return httpx.AsyncClient(base_url=config.url, timeout=600, limits=limits, headers=headers)


async def timed_request(client: httpx.AsyncClient, config: BenchConfig) -> Outcome:
    """One generation, timed."""
    body: dict[str, Any] = {"model": config.model, "prompt": PROMPT, "n": config.n}
    body |= {"width": config.width, "height": config.height, "seed": 0}
    if config.steps is not None:
        body["steps"] = config.steps
    started = time.perf_counter()
    response = await client.post("/images/generations", json=body)
    if response.status_code != 200:
        return None
    return time.perf_counter() - started, server_timing(response.headers.get("server-timing", ""))


async def _run(
    client: httpx.AsyncClient, config: BenchConfig, total: int, concurrency: int, show: bool = True
) -> BenchResult:
    outcomes: list[Outcome] = []
    pending = iter(range(total))

    async def worker() -> None:
        for _ in pending:
            outcomes.append(await timed_request(client, config))
            if show:
                _progress(concurrency, len(outcomes), total)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    if show:
        print(file=sys.stderr)
    return summarise(config, concurrency, outcomes, seconds)


def summarise(config: BenchConfig, concurrency: int, outcomes: Sequence[Outcome], seconds: float) -> BenchResult:
    """The table's row for requests that took `seconds` in all."""
    succeeded = [outcome for outcome in outcomes if outcome is not None]
    latencies = [latency for latency, _ in succeeded]
    timings = [timing for _, timing in succeeded]
    p50, p90, p99 = (float(np.percentile(latencies, q)) * 1000 if latencies else float("nan") for q in (50, 90, 99))
    queue, generate = (_median_of(timings, name) for name in ("queue", "generate"))
    return BenchResult(
        concurrency=concurrency,
        requests=len(outcomes),
        errors=len(outcomes) - len(succeeded),
        seconds=seconds,
        requests_per_second=len(latencies) / seconds,
        images_per_second=len(latencies) * config.n / seconds,
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        step_ms=(generate if generate is not None else p50) / config.steps if config.steps else None,
        queue_p50_ms=queue,
    )


def server_timing(header: str) -> dict[str, float]:
    """`Server-Timing: queue;dur=1.2, generate;dur=80.5` as {"queue": 1.2, "generate": 80.5}; entries
    without a duration are left out."""
    timings = {}
    for entry in header.split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        durations = [p.removeprefix("dur=") for p in params if p.startswith("dur=")]
        if name and durations:
            timings[name] = float(durations[0])
    return timings


def _median_of(timings: list[dict[str, float]], name: str) -> float | None:
    values = [t[name] for t in timings if name in t]
    return float(np.median(values)) if values else None


def _progress(concurrency: int, done: int, total: int) -> None:
    filled = PROGRESS_WIDTH * done // total
    bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
    print(f"\rconcurrency {concurrency:>3} [{bar}] {done}/{total}", end="", file=sys.stderr, flush=True)


def format_table(results: Sequence[BenchResult]) -> str:
    header = (
        f"{'conc':>4} {'req/s':>7} {'img/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'step ms':>8} "
        f"{'queue ms':>8} {'errors':>6}"
    )
    rows = [
        f"{r.concurrency:>4} {r.requests_per_second:>7.2f} {r.images_per_second:>7.2f} {r.latency_p50_ms:>8.1f} "
        f"{r.latency_p90_ms:>8.1f} {r.latency_p99_ms:>8.1f} {_optional(r.step_ms):>8} {_optional(r.queue_p50_ms):>8} "
        f"{r.errors:>6}"
        for r in results
    ]
    return "\n".join([header, *rows])


def _optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def bench(config: BenchConfig, json_path: Path | None) -> list[BenchResult]:
    results = asyncio.run(run_bench(config))
    print(format_table(results))
    if json_path is not None:
        json_path.write_text(json.dumps({"config": asdict(config), "results": [asdict(r) for r in results]}, indent=2))
    return results

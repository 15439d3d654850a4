"""`imagegen bench`: load any running server with image requests and report what perf_analyzer
reports for models, for images: throughput, latency percentiles, time per step, per concurrency; and
where the server says, where the time went (its `Server-Timing` header: queue, generate, inference,
encode) and the frontend's CPU time per denoising step (its `/metrics`).

It is a client only: it measures what a user of the API sees, over HTTP, with the server's own
batching and queueing included.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
    generate_p50_ms: float | None = None  # p50 of the pipeline's time, as the server reports it
    inference_p50_ms: float | None = None  # of it, p50 of the time waiting on Triton
    encode_p50_ms: float | None = None  # p50 of the image encoding's time
    cpu_ms_per_step: float | None = None
    """The frontend process's CPU time over the denoising steps it ran meanwhile, from its `/metrics`
    (`process_cpu_seconds_total`, `imagegen_denoise_steps_total`); None where it does not serve them."""


async def run_bench(config: BenchConfig) -> list[BenchResult]:
    async with client_for(config) as client:
        # Warm up concurrently: Triton's first batched executions allocate their buffers then.
        await _run(client, config, config.warmup, min(config.warmup, max(config.concurrencies)))
        with progress_bars() as bars:
            return [
                await _run(client, config, config.requests, concurrency, bars) for concurrency in config.concurrencies
            ]


def progress_bars() -> Progress:
    """One bar per concurrency level, on stderr (the table goes to stdout); drawn live on a terminal,
    once at the end otherwise."""
    return Progress(
        TextColumn("concurrency {task.fields[concurrency]:>3}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


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
    client: httpx.AsyncClient, config: BenchConfig, total: int, concurrency: int, bars: Progress | None = None
) -> BenchResult:
    outcomes: list[Outcome] = []
    pending = iter(range(total))
    bar = None if bars is None else bars.add_task("", total=total, concurrency=concurrency)

    async def worker() -> None:
        for _ in pending:
            outcomes.append(await timed_request(client, config))
            if bars is not None and bar is not None:
                bars.advance(bar)

    usage = await server_usage(client)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    cpu_ms_per_step = _per_step(usage, await server_usage(client))
    return summarise(config, concurrency, outcomes, seconds, cpu_ms_per_step)


ServerUsage = tuple[float, float] | None
"""The frontend's CPU seconds and the denoising steps it has run, from its `/metrics`; None: not served."""


async def server_usage(client: httpx.AsyncClient) -> ServerUsage:
    """Read from `/metrics` beside the API (on the API's port unless the operator moved it)."""
    try:
        response = await client.get(str(client.base_url.join("/metrics")))
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    cpu = steps = None
    for line in response.text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            cpu = float(line.split()[-1])
        elif line.startswith("imagegen_denoise_steps_total{"):
            steps = (steps or 0.0) + float(line.split()[-1])
    return None if cpu is None or steps is None else (cpu, steps)


def _per_step(before: ServerUsage, after: ServerUsage) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) * 1000 / (after[1] - before[1])


def summarise(
    config: BenchConfig,
    concurrency: int,
    outcomes: Sequence[Outcome],
    seconds: float,
    cpu_ms_per_step: float | None = None,
) -> BenchResult:
    """The table's row for requests that took `seconds` in all."""
    succeeded = [outcome for outcome in outcomes if outcome is not None]
    latencies = [latency for latency, _ in succeeded]
    timings = [timing for _, timing in succeeded]
    p50, p90, p99 = (float(np.percentile(latencies, q)) * 1000 if latencies else float("nan") for q in (50, 90, 99))
    queue, generate, inference, encode = (
        _median_of(timings, name) for name in ("queue", "generate", "inference", "encode")
    )
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
        generate_p50_ms=generate,
        inference_p50_ms=inference,
        encode_p50_ms=encode,
        cpu_ms_per_step=cpu_ms_per_step,
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


COLUMNS = (
    ("conc", "concurrency", "{:d}"),
    ("req/s", "requests_per_second", "{:.2f}"),
    ("img/s", "images_per_second", "{:.2f}"),
    ("p50 ms", "latency_p50_ms", "{:.1f}"),
    ("p90 ms", "latency_p90_ms", "{:.1f}"),
    ("p99 ms", "latency_p99_ms", "{:.1f}"),
    ("step ms", "step_ms", "{:.1f}"),
    ("cpu/step", "cpu_ms_per_step", "{:.2f}"),
    ("queue", "queue_p50_ms", "{:.1f}"),
    ("generate", "generate_p50_ms", "{:.1f}"),
    ("infer", "inference_p50_ms", "{:.1f}"),
    ("encode", "encode_p50_ms", "{:.1f}"),
    ("errors", "errors", "{:d}"),
)
"""The table's columns: heading, BenchResult field, format. The Server-Timing ones are p50s in ms;
`cpu/step` is the frontend's CPU ms per denoising step; "-" where the server does not say."""


def format_table(results: Sequence[BenchResult]) -> str:
    cells = [[heading for heading, _, _ in COLUMNS]]
    for result in results:
        values = (getattr(result, name) for _, name, _ in COLUMNS)
        cells.append(["-" if v is None else form.format(v) for v, (_, _, form) in zip(values, COLUMNS, strict=True)])
    widths = [max(len(row[column]) for row in cells) for column in range(len(COLUMNS))]
    return "\n".join(" ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in cells)


def bench(config: BenchConfig, json_path: Path | None) -> list[BenchResult]:
    results = asyncio.run(run_bench(config))
    print(format_table(results))
    if json_path is not None:
        json_path.write_text(json.dumps({"config": asdict(config), "results": [asdict(r) for r in results]}, indent=2))
    return results

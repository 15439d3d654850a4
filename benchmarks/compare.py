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
neither competes with the other for the CPU. A shared machine's speed drifts by tens of percent
within minutes, so both sides of a ratio are measured close together: one request at a time, the
server and the ORT loop alternate request by request; then the server at concurrency 8, then
diffusers. Everything runs in rounds (`--rounds`, 3), each yielding its own ratios; the figures shown
are the medians over the rounds.

The peers end with the server's own PNG encoding: all three deliver the same bytes, and the ratios
measure what serving adds around the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.peers import DiffusersPeer, OrtPeer
from benchmarks.serving import running_server
from frontend.bench import (
    PROMPT,
    BenchConfig,
    BenchResult,
    Outcome,
    client_for,
    run_bench,
    summarise,
    timed_request,
)
from frontend.imaging import encode_image_base64

CONCURRENCY = 8
STEPS = 4  # flux-schnell's default
ORT_PEER = "onnxruntime loop"
DIFFUSERS_PEER = "diffusers FluxPipeline"


@dataclass(frozen=True)
class Case:
    """One model and size, measured on the server and on the peers."""

    model: str  # the public model id in the bench repository, and the checkpoint folder's name
    size: int
    requests: int  # at concurrency 8; half as many alternating pairs one at a time, a quarter for diffusers
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


@dataclass(frozen=True)
class Round:
    """One measurement of every case, server then peers; its ratios compare only its own figures."""

    served: dict[str, list[BenchResult]]
    peers: dict[str, list[PeerResult]]

    def ratios(self) -> dict[str, float]:
        bench_server = {r.concurrency: r for r in self.served[BENCH.model]}
        small_server = {r.concurrency: r for r in self.served[SMALL.model]}
        bench_peers = {p.peer: p for p in self.peers[BENCH.model]}
        small_ort = next(p for p in self.peers[SMALL.model] if p.peer == ORT_PEER)
        return {
            "single_latency_vs_ort": bench_server[1].latency_p50_ms / bench_peers[ORT_PEER].latency_p50_ms,
            "throughput_vs_ort_sequential": bench_server[CONCURRENCY].images_per_second
            / bench_peers[ORT_PEER].images_per_second,
            "throughput_small_vs_ort_sequential": small_server[CONCURRENCY].images_per_second
            / small_ort.images_per_second,
            "throughput_vs_diffusers": bench_server[CONCURRENCY].images_per_second
            / bench_peers[DIFFUSERS_PEER].images_per_second,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(".imagegen/bench"), help="checkpoints/, model_repository/")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the requests of every case")
    parser.add_argument("--rounds", type=int, default=3, help="server and peers measured this many times, alternating")
    args = parser.parse_args()
    cases = [
        Case(c.model, c.size, max(CONCURRENCY, round(c.requests * args.scale)), c.diffusers) for c in (BENCH, SMALL)
    ]
    generators = {case.model: peer_generators(args.root, case) for case in cases}
    rounds: list[Round] = []
    key = "sk-bench-" + secrets.token_hex(16)
    with running_server(args.root, key) as server:
        for number in range(1, args.rounds + 1):
            served: dict[str, list[BenchResult]] = {}
            peers: dict[str, list[PeerResult]] = {}
            # Each case's server and peers back to back, so a neighbour's load on a shared machine falls
            # on both sides of a ratio alike; the idle server takes no CPU while the peers run.
            for case in cases:
                config = BenchConfig(
                    server.url, key, case.model, case.size, case.size, STEPS, 1, case.requests, (CONCURRENCY,), warmup=2
                )
                print(f"round {number}: {case.model} {case.size}x{case.size}", file=sys.stderr)
                others = dict(generators[case.model])
                single, loop = asyncio.run(interleaved(config, others.pop(ORT_PEER), max(2, case.requests // 2)))
                served[case.model] = [single, *asyncio.run(run_bench(config))]
                peers[case.model] = [loop, *measure_peers(others, case, max(2, case.requests // 4))]
            rounds.append(Round(served, peers))
    report(rounds, args.root / "results.json")


def peer_generators(root: Path, case: Case) -> dict[str, Callable[[int], str]]:
    """The case's peers, loaded once: each turns a seed into the served image's base64 PNG."""
    ort_peer = OrtPeer(root / "model_repository", case.model)
    generators: dict[str, Callable[[int], str]] = {ORT_PEER: lambda seed: encoded(ort_peer, case, seed)}
    if case.diffusers:
        diffusers_peer = DiffusersPeer(root / "checkpoints" / case.model, ort_peer.t5_length)
        generators[DIFFUSERS_PEER] = lambda seed: encoded(diffusers_peer, case, seed)
    return generators


async def interleaved(
    config: BenchConfig, generate: Callable[[int], str], pairs: int
) -> tuple[BenchResult, PeerResult]:
    """One request to the server, then one image of the ORT loop, `pairs` times: the single-request
    latencies of the two sides are measured within seconds of each other, so a drift of the machine's
    speed falls on both alike (Y's two sides taken a minute apart moved by up to 25 %)."""
    single = dataclasses.replace(config, concurrencies=(1,))
    served: list[Outcome] = []
    loop: list[float] = []
    async with client_for(single) as client:
        await timed_request(client, single)  # warm-up of both sides
        generate(0)
        for _ in range(pairs):
            served.append(await timed_request(client, single))
            began = time.perf_counter()
            generate(0)
            loop.append(time.perf_counter() - began)
    server_seconds = sum(outcome[0] for outcome in served if outcome is not None)
    return (
        summarise(single, 1, served, server_seconds),
        PeerResult(ORT_PEER, pairs, sum(loop), statistics.median(loop) * 1000),
    )


def measure_peers(generators: dict[str, Callable[[int], str]], case: Case, images: int) -> list[PeerResult]:
    """Each peer alone, one image after another (diffusers: too slow on a CPU to interleave)."""
    results = []
    for name, generate in generators.items():
        print(f"peer: {name}, {case.model} {case.size}x{case.size}", file=sys.stderr)
        generate(0)  # warm-up: sessions allocate their buffers on the first run
        latencies = []
        started = time.perf_counter()
        for _ in range(images):
            began = time.perf_counter()
            generate(0)
            latencies.append(time.perf_counter() - began)
        results.append(PeerResult(name, images, time.perf_counter() - started, statistics.median(latencies) * 1000))
    return results


def encoded(peer: OrtPeer | DiffusersPeer, case: Case, seed: int) -> str:
    """The peer's image as the server delivers it (PNG, base64, by the server's own function), so all
    three make the same bytes and the comparison is of everything around them."""
    return encode_image_base64(peer.generate(PROMPT, seed, case.size, case.size, STEPS), "png", None)


def report(rounds: list[Round], path: Path) -> None:
    """The comparison table (medians over the rounds), each round's ratios, then the median ratios as
    the very last line."""
    rows = [f"{'who':<34} {'conc':>4} {'img/s':>7} {'p50 ms':>8} {'p99 ms':>8}"]
    for case in (BENCH, SMALL):
        rows.append(f"-- {case.model} {case.size}x{case.size}, {STEPS} steps")
        for concurrency in (1, CONCURRENCY):
            runs = [next(r for r in one.served[case.model] if r.concurrency == concurrency) for one in rounds]
            rows.append(
                f"{'server':<34} {concurrency:>4} {median(r.images_per_second for r in runs):>7.2f} "
                f"{median(r.latency_p50_ms for r in runs):>8.1f} {median(r.latency_p99_ms for r in runs):>8.1f}"
            )
        for peer in (p.peer for p in rounds[0].peers[case.model]):
            peer_runs = [next(p for p in one.peers[case.model] if p.peer == peer) for one in rounds]
            rows.append(
                f"{peer + ' (in-process)':<34} {1:>4} {median(p.images_per_second for p in peer_runs):>7.2f} "
                f"{median(p.latency_p50_ms for p in peer_runs):>8.1f} {'-':>8}"
            )
    per_round = [one.ratios() for one in rounds]
    ratios = {name: median(r[name] for r in per_round) for name in per_round[0]}
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}"
    path.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine,
                "rounds": [
                    {
                        "server": {model: [asdict(r) for r in results] for model, results in one.served.items()},
                        "peers": {model: [asdict(p) for p in results] for model, results in one.peers.items()},
                        "ratios": ratios_of_round,
                    }
                    for one, ratios_of_round in zip(rounds, per_round, strict=True)
                ],
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print("\n".join(["", f"machine: {machine}, medians of {len(rounds)} rounds", *rows, "", "ratios by round:"]))
    for number, round_ratios in enumerate(per_round, start=1):
        print(f"  {number}: " + " ".join(f"{name}={value:.2f}" for name, value in round_ratios.items()))
    print(" ".join(f"{name}={value:.2f}" for name, value in ratios.items()))


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


if __name__ == "__main__":
    main()

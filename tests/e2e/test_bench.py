"""`imagegen bench` against a running server prints its table and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness import API_KEY, Server


def test_bench_reports_every_concurrency_level(server: Server, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    command = [str(Path(sys.executable).parent / "imagegen"), "bench", "--url", server.base_url, "--key", API_KEY]
    command += ["--width", "128", "--height", "128", "--steps", "2", "--requests", "4", "--concurrency", "1,2"]
    run = subprocess.run([*command, "--json", str(report)], check=True, capture_output=True, text=True)
    output = run.stdout
    results = json.loads(report.read_text())["results"]
    assert [result["concurrency"] for result in results] == [1, 2]
    assert all(result["errors"] == 0 and result["images_per_second"] > 0 for result in results)
    assert all(result["latency_p50_ms"] <= result["latency_p99_ms"] for result in results)
    # From the server's Server-Timing: the steps alone, without queueing or encoding.
    assert all(0 < result["step_ms"] * 2 < result["latency_p50_ms"] for result in results)
    assert all(result["queue_p50_ms"] >= 0 for result in results)
    assert output.splitlines()[0].split()[:3] == ["conc", "req/s", "img/s"]
    # Where the time went, from the server's Server-Timing and /metrics.
    assert all(0 <= result["inference_p50_ms"] <= result["generate_p50_ms"] for result in results)
    assert all(result["encode_p50_ms"] > 0 and result["cpu_ms_per_step"] > 0 for result in results)
    assert output.splitlines()[0].split()[-6:] == ["cpu/step", "queue", "generate", "infer", "encode", "errors"]
    # The progress bars alone on stderr: no library logs a line per request.
    assert "HTTP Request" not in run.stderr
    assert "concurrency   2" in run.stderr

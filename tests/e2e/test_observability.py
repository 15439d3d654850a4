"""Observability over a socket: `/metrics` moves as requests are made, every response carries its
request id, the JSON access line names it (never the prompt), and Triton's trace records it.

The tests that count requests in `/metrics` read a server of this module's own (`observed_server`),
which no other module's request moves; the trace test, which stops its server, has one of its own.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from frontend.bench import server_timing
from tests.e2e.images import png_base64, post
from tests.harness import API_KEY, Server, free_port, serving, stop_server

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
GENERATED_ID = re.compile(r"req_[0-9a-f]{24}")


def scrape(url: str) -> Samples:
    response = httpx.get(url)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = text_string_to_metric_families(response.text)
    return {(s.name, frozenset(s.labels.items())): s.value for family in families for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not yet created (a counter that never moved)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def observed_settings(state: Path, metrics_port: int) -> dict[str, str]:
    """As production runs it: JSON logs, `/metrics` on a port of its own, and the embedded Triton
    tracing every inference request into `<state>/trace.json.*`."""
    return {
        "IMAGEGEN_LOG_FORMAT": "json",
        "IMAGEGEN_METRICS_PORT": str(metrics_port),
        "IMAGEGEN_TRITON_TRACE_FILE": str(state / "trace.json"),
    }


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def observed_server(
    schnell_repository: Path, metrics_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server of this module's own, as production runs it (`observed_settings`)."""
    state = tmp_path_factory.mktemp("observed")
    with serving(schnell_repository, state, settings=observed_settings(state, metrics_port)) as running:
        yield running


@pytest.fixture(scope="module")
def metrics(observed_server: Server, metrics_port: int) -> str:
    """The observed server's `/metrics`."""
    return f"http://127.0.0.1:{metrics_port}/metrics"


def test_a_generation_moves_its_models_counters(observed_server: Server, metrics: str) -> None:
    client = openai.OpenAI(api_key=API_KEY, base_url=observed_server.base_url, max_retries=0)
    before = scrape(metrics)
    response = client.images.generate(model="flux-schnell", prompt="a lighthouse", size="256x256", n=2)
    after = scrape(metrics)

    model = {"model": "flux-schnell"}
    assert moved(before, after, "imagegen_requests_total", **model, status="200", code="") == 1
    assert moved(before, after, "imagegen_request_duration_seconds_count", **model, status="200") == 1
    assert moved(before, after, "imagegen_images_total", **model) == 2
    assert moved(before, after, "imagegen_denoise_steps_total", **model) == 4  # one batched call per step
    costs = response.model_extra or {}
    assert moved(before, after, "imagegen_energy_kwh_total", **model) == pytest.approx(costs["energy_cost"])
    assert moved(before, after, "imagegen_credits_total", **model) == pytest.approx(costs["credits_cost"])
    assert moved(before, after, "imagegen_triton_compute_seconds_total", **model) > 0
    assert value(after, "imagegen_queue_depth", **model) == 0 and value(after, "imagegen_running", **model) == 0
    assert ("imagegen_queue_depth", frozenset(model.items())) in after
    assert GENERATED_ID.fullmatch(response._request_id or ""), "the SDK reads X-Request-Id"


def test_a_generation_says_where_its_time_went_in_server_timing(server: Server) -> None:
    # A prompt never sent before, so no cached embeddings: both text encoders run, called together.
    prompt = f"a lighthouse, {uuid.uuid4().hex}"
    started = time.perf_counter()
    response = post(server, {"model": "flux-schnell", "prompt": prompt, "size": "256x256", "steps": 2})
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    timings = server_timing(response.headers["Server-Timing"])
    assert list(timings) == ["queue", "generate", "inference", "encode"]
    assert 0 < timings["inference"] <= timings["generate"]
    assert sum(timings[name] for name in ("queue", "generate", "encode")) < elapsed_ms


def test_steps_count_what_ran_with_an_input_image(observed_server: Server, metrics: str) -> None:
    """img2img at strength 0.5 runs the last half of the schedule: 2 of 4 steps."""
    before = scrape(metrics)
    body = {"model": "flux-schnell", "prompt": "a dune", "size": "256x256", "strength": 0.5}
    response = post(observed_server, {**body, "input_images": [png_base64(Image.new("RGB", (256, 256), "orange"))]})
    assert response.status_code == 200, response.text
    after = scrape(metrics)
    assert moved(before, after, "imagegen_denoise_steps_total", model="flux-schnell") == 2


def test_refusals_are_counted_with_their_code_and_never_a_clients_model_name(
    observed_server: Server, metrics: str
) -> None:
    before = scrape(metrics)
    assert post(observed_server, {"model": "flux-schnell", "prompt": "a cat", "n": 0}).status_code == 400
    assert post(observed_server, {"model": "no-such-model-7f3a", "prompt": "a cat"}).status_code == 404
    url = f"{observed_server.base_url}/images/generations"
    assert httpx.post(url, json={"prompt": "a cat"}).status_code == 401  # refused before the ledger
    assert httpx.get(f"{observed_server.root}/no/such/route-9d1e").status_code == 404
    after = scrape(metrics)

    assert moved(before, after, "imagegen_requests_total", model="", status="400", code="VALIDATION_4004") == 1
    assert moved(before, after, "imagegen_requests_total", model="", status="404", code="INFERENCE_3001") == 1
    route = "/v1/images/generations"
    assert moved(before, after, "imagegen_http_requests_total", method="POST", route=route, status="401") == 1
    assert moved(before, after, "imagegen_http_requests_total", method="GET", route="unmatched", status="404") == 1
    labels = {label for _, series in after for _, label in series}
    assert not any("no-such-model" in label or "route-9d1e" in label for label in labels)


def test_every_response_carries_a_request_id_and_a_sane_client_id_is_kept(server: Server) -> None:
    offered = "client-7.run:42_a"
    assert httpx.get(f"{server.root}/healthz", headers={"X-Request-Id": offered}).headers["x-request-id"] == offered
    refused = post(server, {"prompt": ""})  # errors carry it too
    assert refused.status_code == 400 and GENERATED_ID.fullmatch(refused.headers["x-request-id"])
    unknown = httpx.get(f"{server.root}/nowhere", headers={"X-Request-Id": offered})
    assert unknown.status_code == 404 and unknown.headers["x-request-id"] == offered
    for insane in ("x" * 129, "has space", "semi;colon", ""):
        answered = httpx.get(f"{server.root}/healthz", headers={"X-Request-Id": insane}).headers["x-request-id"]
        assert GENERATED_ID.fullmatch(answered), insane
    ids = {httpx.get(f"{server.root}/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_metrics_can_have_a_port_of_their_own(observed_server: Server, metrics: str) -> None:
    assert httpx.get(f"{observed_server.root}/metrics").status_code == 404
    assert "/metrics" not in httpx.get(f"{observed_server.root}/openapi.json").json()["paths"]
    samples = scrape(metrics)
    assert value(samples, "imagegen_http_requests_total", method="GET", route="unmatched", status="404") >= 1


@pytest.fixture
def traced_server(schnell_repository: Path, tmp_path: Path) -> Iterator[Server]:
    """A server of the trace test's own, which it stops (`observed_settings`)."""
    with serving(schnell_repository, tmp_path, settings=observed_settings(tmp_path, free_port())) as running:
        yield running


def test_the_request_id_reaches_the_json_access_line_and_tritons_trace(traced_server: Server) -> None:
    """Stops the server: Triton writes its traces every 100, and the rest when it stops."""
    request_id, prompt = f"trace-{uuid.uuid4().hex}", "a violet heron over the Trave, 5b0e"
    client = openai.OpenAI(api_key=API_KEY, base_url=traced_server.base_url, max_retries=0)
    response = client.images.generate(
        model="flux-schnell", prompt=prompt, size="256x256", extra_headers={"X-Request-Id": request_id}
    )
    assert response._request_id == request_id

    log = traced_server.log.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("request_id") == request_id and line["logger"] == "imagegen.access"]
    assert len(access) == 1
    assert {key: access[0][key] for key in ("method", "path", "status", "model", "code", "level")} == {
        "method": "POST",
        "path": "/v1/images/generations",
        "status": 200,
        "model": "flux-schnell",
        "code": "",
        "level": "INFO",
    }
    assert access[0]["duration_ms"] > 0 and access[0]["timestamp"].endswith("Z")
    assert any(line["logger"] == "uvicorn.error" for line in lines), "uvicorn's lines are JSON too"
    assert prompt not in log and "heron" not in log

    stop_server(traced_server)
    traced = [
        entry
        for trace in sorted(traced_server.state_dir.glob("trace.json*"))
        for entry in json.loads(trace.read_text())
        if entry.get("request_id") == request_id
    ]
    models = {entry["model_name"] for entry in traced}
    assert {"flux-schnell_tokenizer", "flux-schnell_transformer", "flux-schnell_vae_decoder", "image_safety"} <= models

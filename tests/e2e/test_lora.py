"""LoRA adapters through the real stack: `imagegen lora`, `lora_weights`/`lora_scale` through the
openai SDK, parity with diffusers' `load_lora_weights` + `set_adapters`, and mixed-adapter batches."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from openai import OpenAI
from PIL import Image

from export.lora import build_tiny_lora
from frontend.pipelines import flux, sdxl
from tests.e2e.images import AUTH, assert_matches, post
from tests.harness import API_KEY, Server, embedded_triton_url

PROMPT = "a red fox sitting in the snow at sunset"
SIZE = 256
STEPS = 4
ADAPTERS = {
    # name: (model, seed, rank, alpha, targets)
    "fox-style": ("flux-dev", 1, 4, 8.0, ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_v_proj")),
    "fox-light": ("flux-dev", 2, 4, None, ("to_q", "to_v", "to_add_out")),
    "castle-style": ("sdxl", 3, 4, 8.0, ("to_q", "to_k", "to_v", "to_out.0")),
    "castle-light": ("sdxl", 4, 4, None, ("to_k", "to_out.0")),
}


def lora(server: Server, repository: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`imagegen lora ARGS` beside the running server, as an operator runs it."""
    env = {**os.environ, "IMAGEGEN_HOME": str(server.state_dir), "IMAGEGEN_MODEL_REPOSITORY": str(repository)}
    command = [str(Path(sys.executable).parent / "imagegen"), "lora", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def adapter_files(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lora")
    return {
        name: build_tiny_lora(checkpoints[model], folder / name, seed, rank, alpha, targets)
        for name, (model, seed, rank, alpha, targets) in ADAPTERS.items()
    }


@pytest.fixture(scope="module")
def registered(server: Server, model_repository: Path, adapter_files: dict[str, Path]) -> Iterator[dict[str, Path]]:
    for name, file in adapter_files.items():
        added = lora(server, model_repository, "add", name, "--file", str(file), "--model", ADAPTERS[name][0])
        assert added.returncode == 0, added.stderr
    yield adapter_files
    for name in adapter_files:
        lora(server, model_repository, "remove", name)


@pytest.fixture(scope="module")
def pipelines(checkpoints: dict[str, Path], adapter_files: dict[str, Path]) -> dict[str, Any]:
    """diffusers' pipelines, each with its test adapters loaded under their registered names."""
    import diffusers

    classes = {"flux-dev": diffusers.FluxPipeline, "sdxl": diffusers.StableDiffusionXLPipeline}
    loaded = {model: pipeline.from_pretrained(checkpoints[model]) for model, pipeline in classes.items()}
    for name, file in adapter_files.items():
        loaded[ADAPTERS[name][0]].load_lora_weights(file, adapter_name=name)
    return loaded


def reference(pipeline: Any, model: str, seed: int, adapters: dict[str, float]) -> np.ndarray:
    """diffusers' image for one request alone, with `adapters` (name: scale) set, or none."""
    if adapters:
        pipeline.enable_lora()
        pipeline.set_adapters(list(adapters), adapter_weights=list(adapters.values()))
    else:
        pipeline.disable_lora()
    common = {"prompt": PROMPT, "height": SIZE, "width": SIZE, "num_inference_steps": STEPS, "output_type": "np"}
    if model == "flux-dev":
        latents = flux.initial_latents([seed], SIZE, SIZE)
        return pipeline(**common, max_sequence_length=512, latents=torch.from_numpy(latents)).images
    return pipeline(**common, latents=torch.from_numpy(sdxl.initial_latents([seed], SIZE, SIZE))).images


def generate(server: Server, model: str, seed: int, adapters: dict[str, float]) -> list[np.ndarray]:
    """One image through the openai SDK, adapters in `extra_body`."""
    client = OpenAI(api_key=API_KEY, base_url=server.base_url)
    extra: dict[str, Any] = {"steps": STEPS, "seed": seed}
    if adapters:
        extra |= {"lora_weights": list(adapters), "lora_scale": list(adapters.values())}
    response = client.images.generate(model=model, prompt=PROMPT, size=f"{SIZE}x{SIZE}", extra_body=extra)
    image = Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json)))
    return [np.asarray(image, dtype=np.int16)]


CASES = [
    ("flux-dev", {"fox-style": 1.0}),
    ("flux-dev", {"fox-style": 0.6, "fox-light": -1.2}),
    ("sdxl", {"castle-style": 1.0}),
    ("sdxl", {"castle-style": 1.5, "castle-light": 0.5}),
]


@pytest.mark.parametrize(("model", "adapters"), CASES, ids=["flux-one", "flux-two", "sdxl-one", "sdxl-two"])
def test_adapters_match_diffusers_load_lora_weights(
    server: Server,
    registered: dict[str, Path],
    pipelines: dict[str, Any],
    model: str,
    adapters: dict[str, float],
) -> None:
    pipeline = pipelines[model]
    served = generate(server, model, 5, adapters)
    expected = reference(pipeline, model, 5, adapters)
    assert_matches(served, expected)
    # The adapters change the image: parity is not just the plain model's.
    assert np.abs(served[0] - (reference(pipeline, model, 5, {}) * 255).round()).max() > 20


@pytest.mark.parametrize("model", ["flux-dev", "sdxl"])
def test_scale_zero_gives_the_image_without_adapter(server: Server, registered: dict[str, Path], model: str) -> None:
    names = [name for name, spec in ADAPTERS.items() if spec[0] == model]
    zero = generate(server, model, 8, dict.fromkeys(names, 0.0))
    assert np.array_equal(zero[0], generate(server, model, 8, {})[0])


def test_concurrent_mixed_adapter_requests_batch_and_each_match_diffusers_alone(
    server: Server, registered: dict[str, Path], pipelines: dict[str, Any]
) -> None:
    mixes = [{}, {"fox-style": 1.0}, {"fox-light": 0.8}, {"fox-style": 0.5, "fox-light": 1.0}] * 2
    triton = f"http://{embedded_triton_url(server)}/v2/models/flux-dev_transformer/stats"
    before = httpx.get(triton).json()["model_stats"][0]
    with ThreadPoolExecutor(len(mixes)) as pool:
        served = list(pool.map(lambda job: generate(server, "flux-dev", 20 + job[0], job[1]), enumerate(mixes)))
    after = httpx.get(triton).json()["model_stats"][0]
    for index, (images, adapters) in enumerate(zip(served, mixes, strict=True)):
        assert_matches(images, reference(pipelines["flux-dev"], "flux-dev", 20 + index, adapters))
    rows = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert rows == len(mixes) * STEPS
    assert executions < rows  # rows with different adapters shared denoiser executions


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "flux-dev", "lora_weights": "no-such-adapter"}, 404, "INFERENCE_3004"),
        ({"model": "flux-dev", "lora_weights": "castle-style"}, 400, "VALIDATION_4007"),
        ({"model": "flux-dev", "lora_weights": "fox-style", "lora_scale": 4.5}, 400, "VALIDATION_4004"),
        ({"model": "flux-dev", "lora_weights": ["fox-style"], "lora_scale": [1.0, 2.0]}, 400, "VALIDATION_4004"),
        ({"model": "flux-dev", "lora_weights": ["fox-style", "fox-style"]}, 400, "VALIDATION_4004"),
        ({"model": "flux-dev", "lora_weights": ["a", "b", "c", "d", "e"]}, 400, "VALIDATION_4004"),
        ({"model": "flux-dev", "lora_scale": 0.5}, 400, "VALIDATION_4004"),
    ],
    ids=["unknown", "other-model", "scale-bounds", "scale-count", "twice", "too-many", "scale-alone"],
)
def test_bad_adapter_requests_are_refused_with_a_code(
    server: Server, registered: dict[str, Path], body: dict[str, Any], status: int, code: str
) -> None:
    response = post(server, {"prompt": PROMPT, "size": "256x256", "steps": 1, **body})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["param"] in ("lora_weights", "lora_scale")


def test_models_list_registered_adapters_with_their_model(server: Server, registered: dict[str, Path]) -> None:
    models = {m["id"]: m for m in httpx.get(f"{server.base_url}/models", headers=AUTH).json()["data"]}
    assert {a["name"] for a in models["flux-dev"]["lora_adapters"]} == {"fox-style", "fox-light"}
    assert {a["name"] for a in models["sdxl"]["lora_adapters"]} == {"castle-style", "castle-light"}
    assert models["sdxl"]["limits"]["lora"]["rank_budget"] == 16
    assert {"lora_weights", "lora_scale"} <= set(models["flux-dev"]["limits"]["parameters"])


def test_add_and_remove_need_no_restart_and_spare_requests_in_flight(
    server: Server, model_repository: Path, registered: dict[str, Path]
) -> None:
    added = lora(
        server, model_repository, "add", "fox-extra", "--file", str(registered["fox-light"]), "--model", "flux-dev"
    )
    assert added.returncode == 0, added.stderr
    assert "fox-extra" in lora(server, model_repository, "list").stdout
    body = {
        "model": "flux-dev",
        "prompt": PROMPT,
        "size": "256x256",
        "seed": 3,
        "steps": 30,
        "lora_weights": "fox-extra",
    }
    with ThreadPoolExecutor(1) as pool:
        headers = {**AUTH, "X-Progress-Id": "lora-in-flight"}
        url = f"{server.base_url}/images/generations"
        in_flight = pool.submit(httpx.post, url, json=body, headers=headers, timeout=120)
        progress = f"{server.base_url}/images/progress/lora-in-flight"
        while httpx.get(progress, headers=AUTH).json().get("step", 0) < 1:
            assert not in_flight.done(), in_flight.result().text
        removed = lora(server, model_repository, "remove", "fox-extra")
        assert removed.returncode == 0, removed.stderr
        assert in_flight.result().status_code == 200
    after = post(server, {**body, "steps": 1})
    assert after.status_code == 404 and after.json()["error"]["code"] == "INFERENCE_3004"


def test_lora_add_refuses_bad_files_with_a_clear_message(
    server: Server, model_repository: Path, checkpoints: dict[str, Path], adapter_files: dict[str, Path], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(adapter_files["fox-style"].read_bytes()[:-100])
    too_wide = build_tiny_lora(checkpoints["flux-dev"], tmp_path / "wide", rank=17)
    mlp = build_tiny_lora(checkpoints["flux-dev"], tmp_path / "mlp", targets=("proj_mlp",))
    cases = {
        corrupt: "not a safetensors file",
        truncated: "truncated",
        adapter_files["castle-style"]: "another model",
        too_wide: "rank budget of 16",
        mlp: "not among the exported LoRA layers",
    }
    for file, message in cases.items():
        refused = lora(server, model_repository, "add", "refused", "--file", str(file), "--model", "flux-dev")
        assert refused.returncode == 2
        assert message in refused.stderr
    assert "refused" not in lora(server, model_repository, "list").stdout

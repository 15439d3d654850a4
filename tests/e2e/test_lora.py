"""LoRA adapters through the real stack: `imagegen lora`, `lora_weights`/`lora_scale` through the
openai SDK, parity with diffusers' `load_lora_weights` + `set_adapters`, and mixed-adapter batches.

The module has a server of its own (`lora_server`): the adapters it registers are listed by
`/v1/models` and the batching test counts the denoiser's executions in Triton, neither of which
another module's requests may touch. Every adapter a test registers is removed however it ends.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
from tests.harness import (
    API_KEY,
    Server,
    embedded_triton_url,
    load,
    own_environment,
    paused_mid_flight,
    serving,
    triton_paused,
    wait_until,
)

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


LORA_SETTINGS = {
    "IMAGEGEN_REQUESTS_PER_MINUTE": "100000",
    "IMAGEGEN_CONCURRENT_GENERATIONS": "100",
    # The batching test's generations all run at once, under the operator's key.
    "IMAGEGEN_RUNNING_PER_MODEL": "8",
    "IMAGEGEN_RUNNING_PER_KEY": "8",
}


def lora(server: Server, repository: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`imagegen lora ARGS` beside the running server, with its settings, as an operator runs it."""
    env = {**own_environment(), **server.settings, "IMAGEGEN_MODEL_REPOSITORY": str(repository)}
    command = [str(Path(sys.executable).parent / "imagegen"), "lora", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def registered_names(server: Server, repository: Path) -> set[str]:
    """The adapters `imagegen lora list` shows."""
    listed = lora(server, repository, "list")
    assert listed.returncode == 0, listed.stderr
    return {line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()}


@contextlib.contextmanager
def removed_afterwards(server: Server, repository: Path, names: Iterable[str]) -> Iterator[None]:
    """However the block ends (a failed assert included), none of `names` is registered after it."""
    try:
        yield
    finally:
        for name in set(names) & registered_names(server, repository):
            removed = lora(server, repository, "remove", name)
            assert removed.returncode == 0, removed.stderr


@pytest.fixture(scope="module")
def lora_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's flux-dev and SDXL models (those the adapters are for) and the image-safety model."""
    repository = tmp_path_factory.mktemp("lora-repository")
    for folder in model_repository.iterdir():
        if folder.name.startswith(("flux-dev_", "sdxl_")) or folder.name == "image_safety":
            shutil.copytree(folder, repository / folder.name)
    return repository


@pytest.fixture(scope="module")
def lora_server(lora_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(lora_repository, tmp_path_factory.mktemp("lora-state"), settings=LORA_SETTINGS) as running:
        yield running


@pytest.fixture(scope="module")
def adapter_files(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lora")
    return {
        name: build_tiny_lora(checkpoints[model], folder / name, seed, rank, alpha, targets)
        for name, (model, seed, rank, alpha, targets) in ADAPTERS.items()
    }


@pytest.fixture(scope="module")
def registered(lora_server: Server, lora_repository: Path, adapter_files: dict[str, Path]) -> Iterator[dict[str, Path]]:
    with removed_afterwards(lora_server, lora_repository, adapter_files):
        for name, file in adapter_files.items():
            model = ADAPTERS[name][0]
            added = lora(lora_server, lora_repository, "add", name, "--file", str(file), "--model", model)
            assert added.returncode == 0, added.stderr
        yield adapter_files


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
    lora_server: Server,
    registered: dict[str, Path],
    pipelines: dict[str, Any],
    model: str,
    adapters: dict[str, float],
) -> None:
    pipeline = pipelines[model]
    served = generate(lora_server, model, 5, adapters)
    expected = reference(pipeline, model, 5, adapters)
    assert_matches(served, expected)
    # The adapters change the image: parity is not just the plain model's.
    assert np.abs(served[0] - (reference(pipeline, model, 5, {}) * 255).round()).max() > 20


@pytest.mark.parametrize("model", ["flux-dev", "sdxl"])
def test_scale_zero_gives_the_image_without_adapter(
    lora_server: Server, registered: dict[str, Path], model: str
) -> None:
    names = [name for name, spec in ADAPTERS.items() if spec[0] == model]
    zero = generate(lora_server, model, 8, dict.fromkeys(names, 0.0))
    assert np.array_equal(zero[0], generate(lora_server, model, 8, {})[0])


def test_concurrent_mixed_adapter_requests_batch_and_each_match_diffusers_alone(
    lora_server: Server, registered: dict[str, Path], pipelines: dict[str, Any]
) -> None:
    mixes = [{}, {"fox-style": 1.0}, {"fox-light": 0.8}, {"fox-style": 0.5, "fox-light": 1.0}] * 2
    triton = f"http://{embedded_triton_url(lora_server)}/v2/models/flux-dev_transformer/stats"
    before = httpx.get(triton).json()["model_stats"][0]
    with ThreadPoolExecutor(len(mixes)) as pool:
        # Triton is held while the requests are sent: all of them are running, each waiting on its
        # first call, when it resumes, so their calls meet in its queues and batch however fast the
        # machine is (`dynamic_batching {}` has no queue delay to wait for latecomers).
        with triton_paused(lora_server):
            pending = [
                pool.submit(generate, lora_server, "flux-dev", 20 + index, adapters)
                for index, adapters in enumerate(mixes)
            ]
            wait_until(lambda: all_running(lora_server, pending), 60, "every request running")
        served = [future.result() for future in pending]
    after = httpx.get(triton).json()["model_stats"][0]
    for index, (images, adapters) in enumerate(zip(served, mixes, strict=True)):
        assert_matches(images, reference(pipelines["flux-dev"], "flux-dev", 20 + index, adapters))
    rows = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert rows == len(mixes) * STEPS
    assert executions < rows  # rows with different adapters shared denoiser executions


def all_running(server: Server, pending: list[Future[list[np.ndarray]]]) -> bool:
    """Whether every one of the `pending` flux-dev requests runs in the server (raising the error of one
    that ended: with Triton held, none can have succeeded)."""
    for future in pending:
        if future.done():
            future.result()
    return load(server, "flux-dev")["running"] == len(pending)


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
    lora_server: Server, registered: dict[str, Path], body: dict[str, Any], status: int, code: str
) -> None:
    response = post(lora_server, {"prompt": PROMPT, "size": "256x256", "steps": 1, **body})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["param"] in ("lora_weights", "lora_scale")


def test_models_list_registered_adapters_with_their_model(lora_server: Server, registered: dict[str, Path]) -> None:
    models = {m["id"]: m for m in httpx.get(f"{lora_server.base_url}/models", headers=AUTH).json()["data"]}
    assert {a["name"] for a in models["flux-dev"]["lora_adapters"]} == {"fox-style", "fox-light"}
    assert {a["name"] for a in models["sdxl"]["lora_adapters"]} == {"castle-style", "castle-light"}
    assert models["sdxl"]["limits"]["lora"]["rank_budget"] == 16
    assert {"lora_weights", "lora_scale"} <= set(models["flux-dev"]["limits"]["parameters"])


def test_add_and_remove_need_no_restart_and_spare_requests_in_flight(
    lora_server: Server, lora_repository: Path, registered: dict[str, Path]
) -> None:
    server, repository = lora_server, lora_repository
    body = {
        "model": "flux-dev",
        "prompt": PROMPT,
        "size": "256x256",
        "seed": 3,
        "steps": 30,
        "lora_weights": "fox-extra",
    }
    with removed_afterwards(server, repository, ["fox-extra"]):
        added = lora(
            server, repository, "add", "fox-extra", "--file", str(registered["fox-light"]), "--model", "flux-dev"
        )
        assert added.returncode == 0, added.stderr
        assert "fox-extra" in registered_names(server, repository)
        with ThreadPoolExecutor(1) as pool:
            headers = {**AUTH, "X-Progress-Id": "lora-in-flight"}
            url = f"{server.base_url}/images/generations"
            in_flight = pool.submit(httpx.post, url, json=body, headers=headers, timeout=120)
            # Removed while the generation is held between two of its denoising steps, Triton paused.
            with paused_mid_flight(server, ["lora-in-flight"]):
                removed = lora(server, repository, "remove", "fox-extra")
                assert removed.returncode == 0, removed.stderr
            assert in_flight.result().status_code == 200, in_flight.result().text
    after = post(server, {**body, "steps": 1})
    assert after.status_code == 404 and after.json()["error"]["code"] == "INFERENCE_3004"


def test_lora_add_refuses_bad_files_with_a_clear_message(
    lora_server: Server,
    lora_repository: Path,
    checkpoints: dict[str, Path],
    adapter_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    server, repository = lora_server, lora_repository
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
    with removed_afterwards(server, repository, ["refused"]):
        for file, message in cases.items():
            refused = lora(server, repository, "add", "refused", "--file", str(file), "--model", "flux-dev")
            assert refused.returncode == 2
            assert message in refused.stderr
        assert "refused" not in registered_names(server, repository)

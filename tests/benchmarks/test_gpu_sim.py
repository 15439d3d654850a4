"""The simulated H200: its repository has the published models' contracts, its backend takes the cost
file's time and returns outputs of those shapes, and `make bench-gpu-sim`'s script ends in its line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from benchmarks.gpu_sim import COSTS
from export.cost_model import ComponentCost, load_costs
from export.simulate import SIMULATION_FILE, export_simulated
from families import FAMILIES
from frontend.embedded_triton import EmbeddedTriton

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ("flux-schnell", "flux-dev", "sdxl")

# The published checkpoints' tensors (black-forest-labs/FLUX.1-schnell and -dev, stabilityai/
# stable-diffusion-xl-base-1.0 config.json values), per sample, -1 where the size is the request's:
# model -> tensor -> dims.
FLUX_SHAPES = {
    "text_encoder": {"input_ids": [-1], "pooled_embeds": [768]},  # CLIP-L's pooled output
    "text_encoder_2": {"input_ids": [-1], "prompt_embeds": [-1, 4096]},  # T5-XXL's d_model
    "transformer": {
        "hidden_states": [-1, 64],  # 16 latent channels packed 2x2
        "encoder_hidden_states": [-1, 4096],  # joint_attention_dim
        "pooled_projections": [768],  # pooled_projection_dim
        "timestep": [1],
        "img_ids": [-1, 3],
        "noise_pred": [-1, 64],
    },
    "vae_decoder": {"latent": [16, -1, -1], "image": [-1, -1, 3]},
    "vae_encoder": {"image": [3, -1, -1], "latent_mean": [16, -1, -1], "latent_std": [16, -1, -1]},
}
PUBLISHED_SHAPES: dict[str, dict[str, dict[str, list[int]]]] = {
    "flux-schnell": FLUX_SHAPES,
    "flux-dev": {**FLUX_SHAPES, "transformer": {**FLUX_SHAPES["transformer"], "guidance": [1]}},
    "sdxl": {
        "text_encoder": {"input_ids": [-1], "prompt_embeds": [-1, 768]},  # CLIP-L's hidden size
        "text_encoder_2": {"input_ids": [-1], "prompt_embeds": [-1, 1280], "text_embeds": [1280]},  # bigG
        "unet": {
            "sample": [4, -1, -1],
            "timestep": [1],
            "encoder_hidden_states": [-1, 2048],  # both encoders' states side by side
            "text_embeds": [1280],
            "time_ids": [6],  # original size, crop, target size
            "noise_pred": [4, -1, -1],
        },
        "vae_decoder": {"latent": [4, -1, -1], "image": [-1, -1, 3]},
        "vae_encoder": {"image": [3, -1, -1], "latent_mean": [4, -1, -1], "latent_std": [4, -1, -1]},
    },
}
AT_1024 = {
    # FLUX.1 at 1024x1024: (1024 / 8 / 2)² packed tokens, T5 padded to schnell's 256 or dev's 512.
    "flux-schnell": {"image_tokens": 4096, "text_tokens": 256, "latent_height": 128},
    "flux-dev": {"image_tokens": 4096, "text_tokens": 512, "latent_height": 128},
    "sdxl": {"text_tokens": 77, "latent_height": 128},
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each preset exported as `imagegen export --simulate` writes it, without LoRA branches (their
    inputs are the real export's too, and sized by the published depth: 52 MB a sample for FLUX.1)."""
    folder = tmp_path_factory.mktemp("simulated") / "model_repository"
    for preset in PRESETS:
        export_simulated(COSTS, preset, preset, folder, lora_rank=0)
    return folder


def config(repository: Path, model: str) -> pb.ModelConfig:
    return text_format.Parse((repository / model / "config.pbtxt").read_text(), pb.ModelConfig())


@pytest.mark.parametrize("preset", PRESETS)
def test_simulated_models_have_the_published_tensors(repository: Path, preset: str) -> None:
    for component, tensors in PUBLISHED_SHAPES[preset].items():
        model = config(repository, f"{preset}_{component}")
        assert model.backend == "simulated"
        assert model.HasField("dynamic_batching")
        assert {tensor.name: list(tensor.dims) for tensor in [*model.input, *model.output]} == tensors
        assert (repository / model.name / "1" / SIMULATION_FILE).is_file()
    tokenizer = config(repository, f"{preset}_tokenizer")
    assert tokenizer.backend == "tokenizer"


@pytest.mark.parametrize("preset", PRESETS)
def test_simulated_pipeline_serves_1024_at_the_published_sizes(repository: Path, preset: str) -> None:
    family_name = "flux" if preset.startswith("flux") else "sdxl"
    denoiser = FAMILIES[family_name].denoiser.name
    metadata = json.loads(config(repository, f"{preset}_{denoiser}").parameters["imagegen.pipeline"].string_value)
    ranges = FAMILIES[metadata["family"]].axis_ranges(metadata)
    assert {axis: ranges[axis].opt for axis in AT_1024[preset]} == AT_1024[preset]
    assert metadata["default_steps"] == {"flux-schnell": 4, "flux-dev": 28, "sdxl": 30}[preset]


def test_cost_model_interpolates_between_measured_batches_and_extrapolates_per_sample() -> None:
    cost = ComponentCost("step", ((1, 10.0), (4, 40.0), (8, 60.0)))
    assert [cost.ms(batch) for batch in (1, 2, 4, 6, 8, 16)] == [10.0, 20.0, 40.0, 50.0, 60.0, 120.0]


def test_every_cost_has_its_source() -> None:
    document = json.loads(COSTS.read_text())
    sources = {call["source"] for entry in document["components"].values() for call in entry["calls"]}
    assert sources <= set(document["sources"])
    assert load_costs(COSTS)["sdxl-unet"].ms(16) == 268.73  # README "GPU reference", CUDA graph


@pytest.fixture(scope="module")
def simulated_triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTriton]:
    """Triton serving four of flux-schnell's simulated models."""
    folder = tmp_path_factory.mktemp("simulated-triton") / "model_repository"
    for component in ("text_encoder_2", "transformer", "vae_decoder", "vae_encoder"):
        shutil.copytree(repository / f"flux-schnell_{component}", folder / f"flux-schnell_{component}")
    server = EmbeddedTriton(folder, tmp_path_factory.mktemp("simulated-triton-state"), 0, None)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def infer(server: EmbeddedTriton, model: str, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    client = triton_http.InferenceServerClient(server.url)
    tensors = []
    for name, array in inputs.items():
        tensor = triton_http.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors)
    return {output["name"]: result.as_numpy(output["name"]) for output in result.get_response()["outputs"]}


def compute_ns(server: EmbeddedTriton, model: str) -> int:
    """Nanoseconds the backend has reported computing for `model`, in all: its calls' times without
    the HTTP transfer around them, which depends on the machine's load."""
    stats = triton_http.InferenceServerClient(server.url).get_inference_statistics(model)
    return int(stats["model_stats"][0]["inference_stats"]["compute_infer"]["ns"])


def test_a_simulated_step_takes_the_cost_files_time(simulated_triton: EmbeddedTriton, repository: Path) -> None:
    """Never less than the H200's figure for one sample (the backend sleeps to it), and less than the
    figure for two: the price of the call's batch, not of another."""
    cost = load_costs(COSTS)["flux-transformer-256"]
    latents = np.ones((1, 4096, 64), np.float32)
    step = {
        "hidden_states": latents,
        "encoder_hidden_states": np.zeros((1, 256, 4096), np.float32),
        "pooled_projections": np.zeros((1, 768), np.float32),
        "timestep": np.ones((1, 1), np.float32),
        "img_ids": np.zeros((1, 4096, 3), np.float32),
    }
    before = compute_ns(simulated_triton, "flux-schnell_transformer")
    outputs = infer(simulated_triton, "flux-schnell_transformer", step)
    computed_ms = (compute_ns(simulated_triton, "flux-schnell_transformer") - before) / 1e6
    assert cost.ms(1) <= computed_ms < cost.ms(2)
    assert np.array_equal(outputs["noise_pred"], latents / 2)  # a prediction that keeps the latents finite


def test_simulated_encoder_and_decoder_answer_in_the_contracts_shapes(simulated_triton: EmbeddedTriton) -> None:
    encoded = infer(simulated_triton, "flux-schnell_text_encoder_2", {"input_ids": np.zeros((2, 256), np.int64)})
    assert encoded["prompt_embeds"].shape == (2, 256, 4096)
    latent = np.linspace(-1, 1, 16 * 128 * 128, dtype=np.float32).reshape(1, 16, 128, 128)
    decoded = infer(simulated_triton, "flux-schnell_vae_decoder", {"latent": latent})
    assert decoded["image"].shape == (1, 1024, 1024, 3)
    assert decoded["image"].dtype == np.uint8
    cell = np.clip(128 + 64 * latent[0, :3, 5, 7], 0, 255).astype(np.uint8)  # a latent cell: 8x8 pixels
    assert (decoded["image"][0, 40:48, 56:64] == cell).all()
    image = np.linspace(0, 1, 2 * 3 * 64 * 32, dtype=np.float32).reshape(2, 3, 64, 32)
    posterior = infer(simulated_triton, "flux-schnell_vae_encoder", {"image": image})
    assert posterior["latent_mean"].shape == posterior["latent_std"].shape == (2, 16, 8, 4)
    assert np.array_equal(posterior["latent_mean"][:, 4], image[:, 1, ::8, ::8] * 2 - 1)  # channel 4: image's 1
    assert (posterior["latent_std"] == np.float32(0.01)).all()


def test_bench_gpu_sim_prints_its_figures_last(tmp_path: Path) -> None:
    """The script `make bench-gpu-sim` runs, small: one model, two steps, three requests."""
    command = [sys.executable, "-m", "benchmarks.gpu_sim", "--root", str(tmp_path), "--models", "flux-schnell"]
    small = ["--steps", "2", "--single", "1", "--requests", "2", "--concurrency", "2"]
    run = subprocess.run([*command, *small], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    assert [part.split("=")[0] for part in last.split()] == [
        "sim_latency_overhead",
        "sim_throughput_efficiency",
        "cpu_ms_per_step",
    ]
    assert all(float(part.split("=")[1]) > 0 for part in last.split())

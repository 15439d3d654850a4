"""The real-width presets (`imagegen tiny --preset real-width`: the published widths, depth cut, full-size
tokenizers) exported in FP32 with their denoisers past protobuf's 2 GB, served by the embedded Triton at
256x256: the served tokenizer model gives transformers' ids for the prompt, and the image matches
diffusers on the same weights and latents within 2/255.

Marked `real_width`, outside `make test` (gigabytes of weights, minutes of export on a CPU): `make
test-real` runs them. `IMAGEGEN_TEST_CACHE` keeps each family's checkpoint and repository between runs
(an export is reused only once it completed).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, FluxPipeline, StableDiffusionXLPipeline

from export.clip_merges import VOCABULARY_SIZE
from export.tiny import CLIP_NUM_MERGES, T5_EXTRA_IDS, T5_PIECES
from frontend.pipelines import flux, sdxl
from tests.e2e.images import assert_matches, served_images
from tests.harness import Server, free_port, serving

pytestmark = [pytest.mark.real_width, pytest.mark.timeout(1800)]  # the first test waits for an export

PROMPT = "A Hanseatic trading ship entering Lübeck harbor at dawn, painted in oils"
SIDE = 256
SEED = 5
STEPS = 4
SDXL_GUIDANCE = 5.0
FLUX_T5_TOKENS = 256  # FLUX.1-schnell's max_sequence_length
DENOISERS = {"flux-schnell": "transformer", "sdxl": "unet"}
VOCABULARIES = {"flux-schnell": (VOCABULARY_SIZE, T5_PIECES + T5_EXTRA_IDS), "sdxl": (VOCABULARY_SIZE, VOCABULARY_SIZE)}
"""Each family's (tokenizer, tokenizer_2) sizes: CLIP's published 49,408 and T5's 32,100."""
COMPLETE = ".complete"
REQUEST_TIMEOUT = 900
"""Seconds: a real-width request takes under half a minute on an idle 2-core machine, minutes on a shared one."""


@dataclass(frozen=True)
class Exported:
    pipeline: str
    checkpoint: Path
    repository: Path


@pytest.fixture(scope="module", params=list(DENOISERS))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The family's real-width checkpoint exported alone with the image-safety model, so one family's
    weights are in memory at a time."""
    from export.checkpoint import export_checkpoint
    from export.report import summary_table
    from export.safety import export_safety_model
    from export.tiny import build_tiny_checkpoint

    pipeline: str = request.param
    cache = os.environ.get("IMAGEGEN_TEST_CACHE")
    root = Path(cache) / "real-width" / pipeline if cache else tmp_path_factory.mktemp(pipeline)
    exported = Exported(pipeline, root / "checkpoint", root / "repository")
    if not (exported.repository / COMPLETE).is_file():
        started = time.perf_counter()
        build_tiny_checkpoint(pipeline, exported.checkpoint, seed=0, preset="real-width")
        print(f"\n{pipeline}: checkpoint built in {time.perf_counter() - started:.0f} s")
        print(summary_table(export_checkpoint(exported.checkpoint, pipeline, exported.repository)))
        export_safety_model(exported.repository)
        (exported.repository / COMPLETE).touch()
    return exported


@pytest.fixture(scope="module")
def server(family: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Triton's HTTP port fixed, so the test can ask the tokenizer model itself."""
    settings = {"IMAGEGEN_TRITON_HTTP_PORT": str(free_port())}
    with serving(family.repository, tmp_path_factory.mktemp("state"), settings=settings) as running:
        yield running


@pytest.fixture(scope="module")
def reference(family: Exported) -> Iterator[DiffusionPipeline]:
    """diffusers' pipeline on the same checkpoint folder, its weights freed after the family's tests."""
    loader = StableDiffusionXLPipeline if family.pipeline == "sdxl" else FluxPipeline
    pipeline = loader.from_pretrained(family.checkpoint)
    yield pipeline
    del pipeline
    gc.collect()


def test_denoiser_keeps_its_weights_in_external_data_past_2_gb(family: Exported) -> None:
    version = family.repository / f"{family.pipeline}_{DENOISERS[family.pipeline]}" / "1"
    assert (version / "model.onnx.data").stat().st_size > 2 * 2**30
    assert (version / "model.onnx").stat().st_size < 2 * 2**30


def test_served_tokenizer_gives_transformers_ids_with_full_size_vocabularies(
    family: Exported, server: Server, reference: DiffusionPipeline
) -> None:
    tokenizers = {"text_encoder": reference.tokenizer, "text_encoder_2": reference.tokenizer_2}
    assert tuple(len(tokenizer) for tokenizer in tokenizers.values()) == VOCABULARIES[family.pipeline]
    served = served_token_ids(server, f"{family.pipeline}_tokenizer")
    for encoder, tokenizer in tokenizers.items():
        ids = served[f"{encoder}_input_ids"]  # padded to the length the exporter configured
        assert ids == tokenizer(PROMPT, padding="max_length", max_length=len(ids), truncation=True).input_ids
    # The tiny vocabularies end at a few hundred ids: these words are the full vocabularies' own.
    assert max(served["text_encoder_input_ids"]) > 2 * 256 + CLIP_NUM_MERGES


def test_served_image_matches_diffusers(family: Exported, server: Server, reference: DiffusionPipeline) -> None:
    body: dict[str, Any] = {"model": family.pipeline, "prompt": PROMPT, "width": SIDE, "height": SIDE, "seed": SEED}
    body |= {"steps": STEPS} | ({"guidance": SDXL_GUIDANCE} if family.pipeline == "sdxl" else {})
    served = served_images(server, body, timeout=REQUEST_TIMEOUT)
    assert served[0].shape == (SIDE, SIDE, 3)
    difference = assert_matches(served, diffusers_images(family.pipeline, reference))
    print(f"\n{family.pipeline}: max |served - diffusers| = {difference}/255")


def served_token_ids(server: Server, model: str) -> dict[str, list[int]]:
    """The tokenizer model's outputs for PROMPT, asked of Triton itself (KServe v2 HTTP)."""
    request = {"inputs": [{"name": "prompt", "shape": [1, 1], "datatype": "BYTES", "data": [PROMPT]}]}
    port = server.settings["IMAGEGEN_TRITON_HTTP_PORT"]
    response = httpx.post(f"http://127.0.0.1:{port}/v2/models/{model}/infer", json=request, timeout=60)
    assert response.status_code == 200, response.text
    return {output["name"]: list(output["data"]) for output in response.json()["outputs"]}


def diffusers_images(pipeline: str, reference: DiffusionPipeline) -> np.ndarray:
    """diffusers' images from the same latents the frontend draws for SEED."""
    common = {"prompt": PROMPT, "width": SIDE, "height": SIDE, "num_inference_steps": STEPS, "output_type": "np"}
    if pipeline == "sdxl":
        latents = sdxl.initial_latents([SEED], SIDE, SIDE)
        common |= {"guidance_scale": SDXL_GUIDANCE}
    else:
        latents = flux.initial_latents([SEED], SIDE, SIDE)
        common |= {"guidance_scale": 0.0, "max_sequence_length": FLUX_T5_TOKENS}
    with torch.no_grad():
        images: np.ndarray = reference(**common, latents=torch.from_numpy(latents)).images
    return images

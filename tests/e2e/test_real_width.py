"""The real-width presets (`imagegen tiny --preset real-width`: the published widths, depth cut) exported
in FP32 with their denoisers past protobuf's 2 GB, served by the embedded Triton at 256x256, and
matching diffusers on the same weights and latents within 2/255.

Marked `real_width`, outside `make test` (gigabytes of weights, minutes of export on a CPU): `make
test-real` runs them. `IMAGEGEN_TEST_CACHE` keeps each family's checkpoint and repository between runs
(an export is reused only once it completed).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from frontend.pipelines import flux, sdxl
from tests.e2e.images import assert_matches, served_images
from tests.harness import Server, serving

pytestmark = [pytest.mark.real_width, pytest.mark.timeout(1800)]  # the first test waits for an export

PROMPT = "A Hanseatic trading ship entering Lübeck harbor at dawn, painted in oils"
SIDE = 256
SEED = 5
STEPS = 4
SDXL_GUIDANCE = 5.0
DENOISERS = {"flux-schnell": "transformer", "sdxl": "unet"}
COMPLETE = ".complete"


@pytest.fixture(scope="module", params=list(DENOISERS))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(pipeline, checkpoint, repository): the family's real-width checkpoint exported alone with the
    image-safety model, so one family's weights are in memory at a time."""
    from export.checkpoint import export_checkpoint
    from export.report import summary_table
    from export.safety import export_safety_model
    from export.tiny import build_tiny_checkpoint

    pipeline: str = request.param
    cache = os.environ.get("IMAGEGEN_TEST_CACHE")
    root = Path(cache) / "real-width" / pipeline if cache else tmp_path_factory.mktemp(pipeline)
    checkpoint, repository = root / "checkpoint", root / "repository"
    if not (repository / COMPLETE).is_file():
        build_tiny_checkpoint(pipeline, checkpoint, seed=0, preset="real-width")
        print(summary_table(export_checkpoint(checkpoint, pipeline, repository)))
        export_safety_model(repository)
        (repository / COMPLETE).touch()
    return pipeline, checkpoint, repository


@pytest.fixture(scope="module")
def server(family: tuple[str, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(family[2], tmp_path_factory.mktemp("state")) as running:
        yield running


def test_denoiser_keeps_its_weights_in_external_data_past_2_gb(family: tuple[str, Path, Path]) -> None:
    pipeline, _, repository = family
    version = repository / f"{pipeline}_{DENOISERS[pipeline]}" / "1"
    assert (version / "model.onnx.data").stat().st_size > 2 * 2**30
    assert (version / "model.onnx").stat().st_size < 2 * 2**30


def test_served_image_matches_diffusers(family: tuple[str, Path, Path], server: Server) -> None:
    pipeline, checkpoint, _ = family
    body: dict[str, Any] = {"model": pipeline, "prompt": PROMPT, "width": SIDE, "height": SIDE, "seed": SEED}
    body |= {"steps": STEPS} | ({"guidance": SDXL_GUIDANCE} if pipeline == "sdxl" else {})
    served = served_images(server, body)
    assert served[0].shape == (SIDE, SIDE, 3)
    assert_matches(served, diffusers_images(pipeline, checkpoint))


def diffusers_images(pipeline: str, checkpoint: Path) -> Any:
    """diffusers' images from the same checkpoint and latents, its weights freed before returning."""
    import diffusers

    common = {"prompt": PROMPT, "width": SIDE, "height": SIDE, "num_inference_steps": STEPS, "output_type": "np"}
    if pipeline == "sdxl":
        reference = diffusers.StableDiffusionXLPipeline.from_pretrained(checkpoint)
        latents = sdxl.initial_latents([SEED], SIDE, SIDE)
        common |= {"guidance_scale": SDXL_GUIDANCE}
    else:
        reference = diffusers.FluxPipeline.from_pretrained(checkpoint)
        latents = flux.initial_latents([SEED], SIDE, SIDE)
        common |= {"guidance_scale": 0.0, "max_sequence_length": 256}
    with torch.no_grad():
        images = reference(**common, latents=torch.from_numpy(latents)).images
    del reference
    gc.collect()
    return images

"""The GPU reference times the real architectures: checked here on the CPU without timing anything."""

from __future__ import annotations

import pytest
import torch

from benchmarks.gpu_reference import MODELS, flux_step, sdxl_step, vae_decode
from export.tiny import build_flux_transformer, build_sdxl_unet, build_vae

# Parameter counts of the published checkpoints. FLUX.1-schnell's is FLUX.1-dev's 11,901,408,320
# less dev's guidance embedder (256 -> 3072 -> 3072: 10,229,760), which schnell does not have.
PUBLISHED_PARAMETERS = {
    "flux.1-schnell transformer": 11_891_178_560,
    "sdxl unet": 2_567_463_684,
    "sdxl vae decoder": 83_653_863,
    "sdxl vae encoder": 83_653_863,
    "clip-l text encoder": 123_060_480,
    "openclip-bigg text encoder": 694_659_840,
    "t5-xxl encoder (schnell, 256 tokens)": 4_762_310_656,
}


@pytest.mark.parametrize("name", PUBLISHED_PARAMETERS)
def test_reference_models_are_the_published_sizes(name: str) -> None:
    build, _ = MODELS[name]
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build()
    assert sum(parameter.numel() for parameter in model.parameters()) == PUBLISHED_PARAMETERS[name]


def test_timed_calls_take_the_pipelines_inputs() -> None:
    """The same calls on the tiny models: a denoiser returns latents, a VAE decoder 8x larger pixels."""
    side, batch = 64, 2
    with torch.inference_mode():
        flux = flux_step(build_flux_transformer(0, guidance_embeds=False), batch, side)()[0]
        sdxl = sdxl_step(build_sdxl_unet(0), batch, side)()[0]
        pixels = vae_decode(build_vae(0, 16, quant_convs=False, scaling_factor=1.0), batch, side)()[0]
    assert flux.shape == (batch, (side // 16) ** 2, 64)
    assert sdxl.shape == (batch, 4, side // 8, side // 8)
    assert pixels.shape == (batch, 3, side, side)

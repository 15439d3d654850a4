"""`imagegen tiny --preset bench`: the benchmark's larger FLUX.1-schnell, loadable by diffusers."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers import FluxPipeline

from export.tiny import BENCH_FLUX_HEAD_DIM, FLUX_HEAD_DIM, build_tiny_checkpoint


def test_bench_preset_is_a_wider_flux_schnell_that_diffusers_loads(tmp_path: Path) -> None:
    first = build_tiny_checkpoint("flux-schnell", tmp_path / "a", seed=0, preset="bench")
    pipeline = FluxPipeline.from_pretrained(first)
    config = pipeline.transformer.config
    assert config.attention_head_dim == BENCH_FLUX_HEAD_DIM > FLUX_HEAD_DIM
    assert not config.guidance_embeds  # schnell
    second = build_tiny_checkpoint("flux-schnell", tmp_path / "b", seed=0, preset="bench")
    weights = first / "transformer" / "diffusion_pytorch_model.safetensors"
    assert weights.read_bytes() == (second / weights.relative_to(first)).read_bytes()


def test_unknown_preset_or_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        build_tiny_checkpoint("flux-schnell", tmp_path, preset="huge")
    with pytest.raises(ValueError, match="unknown model family"):
        build_tiny_checkpoint("sdxl", tmp_path, preset="bench")

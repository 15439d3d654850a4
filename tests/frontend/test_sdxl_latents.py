"""Seed -> SDXL latents, and the img2img step count, exactly as diffusers' SDXL pipelines have them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline

from frontend.pipelines.noise import initial_noise
from frontend.pipelines.sdxl import img2img_start, initial_latents


def test_initial_latents_are_the_documented_noise_per_seed() -> None:
    latents = initial_latents([5, 6], height=64, width=96)
    assert latents.shape == (2, 4, 8, 12)
    np.testing.assert_array_equal(latents[1], initial_noise(6, (4, 8, 12)))


@pytest.mark.parametrize("steps", [1, 2, 4, 10, 30, 100])
@pytest.mark.parametrize("strength", [0.01, 0.29, 0.3, 0.5, 0.6, 0.7, 0.99, 1.0])
def test_img2img_start_is_diffusers_get_timesteps(steps: int, strength: float) -> None:
    scheduler = EulerDiscreteScheduler()
    scheduler.set_timesteps(steps)
    pipeline = SimpleNamespace(scheduler=scheduler)
    _, kept = StableDiffusionXLImg2ImgPipeline.get_timesteps(pipeline, steps, strength, "cpu")
    assert img2img_start(steps, strength) == steps - kept

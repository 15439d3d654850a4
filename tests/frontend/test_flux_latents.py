"""Seed -> latents is reproducible and laid out exactly as diffusers' FluxPipeline lays it out."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FluxPipeline as DiffusersFlux

from frontend.pipelines.flux import initial_latents, latent_image_ids, pack_latents, unpack_latents
from frontend.pipelines.noise import image_seeds, initial_noise


def test_packing_equals_diffusers_and_round_trips() -> None:
    latents = np.random.default_rng(0).standard_normal((2, 16, 8, 12), dtype=np.float32)
    packed = pack_latents(latents)
    expected = DiffusersFlux._pack_latents(torch.from_numpy(latents), 2, 16, 8, 12)
    np.testing.assert_array_equal(packed, expected.numpy())
    np.testing.assert_array_equal(unpack_latents(packed, 8, 12), latents)


def test_image_ids_equal_diffusers() -> None:
    expected = DiffusersFlux._prepare_latent_image_ids(1, 4, 6, "cpu", torch.float32)
    np.testing.assert_array_equal(latent_image_ids(8, 12), expected.numpy())


def test_initial_latents_are_the_documented_noise_per_seed() -> None:
    latents = initial_latents([5, 6], height=64, width=96)
    assert latents.shape == (2, 4 * 6, 64)
    np.testing.assert_array_equal(unpack_latents(latents, 8, 12)[1], initial_noise(6, (16, 8, 12)))


def test_seeds_are_consecutive_from_the_given_one() -> None:
    assert image_seeds(41, 3) == [41, 42, 43]
    assert image_seeds(2**32 - 1, 2) == [2**32 - 1, 0]
    assert len(set(image_seeds(None, 10))) == 10

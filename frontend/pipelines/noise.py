"""Seed -> initial noise, a documented public function so anyone can reproduce an image elsewhere.

`initial_noise(seed, shape)` is numpy's PCG64 generator seeded with `seed`, drawing float32
standard normals in C order. Image `i` of a request with seed `s` uses seed `s + i`, so one image
of a batch can be regenerated alone. To get the same image from diffusers, pass this noise
(packed for FLUX) as the pipeline's `latents=`.

img2img needs a second draw, the noise that samples the VAE posterior of the input image
(`mean + std * noise`, as diffusers' `retrieve_latents` does): `posterior_noise(seed, shape)` is
the same generator's next draw after `initial_noise`, so the initial noise of a seed does not
depend on whether an input image was given.
"""

from __future__ import annotations

import secrets

import numpy as np
import numpy.typing as npt

SEED_LIMIT = 2**32
"""Seeds wrap at 2**32 so `seed + i` stays a valid PCG64 seed that every client can represent."""


def initial_noise(seed: int, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)


def noise_batch(seeds: list[int], shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """`initial_noise` of each seed, stacked: the initial noise of a request's images."""
    return np.stack([initial_noise(seed, shape) for seed in seeds])


def posterior_noise(seed: int, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    generator = np.random.Generator(np.random.PCG64(seed))
    generator.standard_normal(shape, dtype=np.float32)
    return generator.standard_normal(shape, dtype=np.float32)


def image_seeds(seed: int | None, n: int) -> list[int]:
    """Per-image seeds: `seed + i`, from a random base seed when none is given."""
    base = secrets.randbelow(SEED_LIMIT) if seed is None else seed
    return [(base + i) % SEED_LIMIT for i in range(n)]

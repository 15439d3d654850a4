"""The pipeline stages every family runs the same way: tokenizing, encoding input images, decoding latents.

The exported VAE models work in the denoiser's latent space, take RGB [0, 1] and return uint8 pixels
(export/vae.py puts the checkpoint's scaling and shift factors and the rounding in the graph), so
nothing here depends on the family.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from frontend.accounting import InferenceClock
from frontend.pipelines.noise import posterior_noise
from frontend.triton import TritonClient


async def tokenize(
    triton: TritonClient, model: str, prompts: list[str], encoders: Iterable[str], clock: InferenceClock
) -> dict[str, npt.NDArray[Any]]:
    """`<encoder>_input_ids` for each text encoder, one row per prompt, padded and truncated as
    diffusers does, and `prompt_truncated`: whether any encoder cut a prompt at its limit."""
    return await triton.infer(
        model,
        {"prompt": np.array([[prompt.encode()] for prompt in prompts], dtype=np.object_)},
        [*(f"{encoder}_input_ids" for encoder in encoders), "prompt_truncated"],
        clock,
    )


def sample_posterior(
    mean: npt.NDArray[np.float32], std: npt.NDArray[np.float32], seeds: list[int]
) -> npt.NDArray[np.float32]:
    """Image i's latents `mean + std * posterior_noise(seeds[i])`: diffusers' `retrieve_latents`
    (`latent_dist.sample`) with the documented noise instead of a torch generator."""
    return mean + std * np.stack([posterior_noise(seed, mean.shape[1:]) for seed in seeds])


async def encode_images(
    triton: TritonClient, model: str, images: npt.NDArray[np.float32], seeds: list[int], clock: InferenceClock
) -> npt.NDArray[np.float32]:
    """The input images' latents, sampled from the VAE posterior with each image's documented noise."""
    result = await triton.infer(model, {"image": images}, ["latent_mean", "latent_std"], clock)
    return sample_posterior(result["latent_mean"], result["latent_std"], seeds)


async def decode_latents(
    triton: TritonClient, model: str, latents: npt.NDArray[np.float32], clock: InferenceClock
) -> list[npt.NDArray[np.uint8]]:
    """Height x width x 3 uint8 images, rounded as diffusers' numpy_to_pil inside the decoder's graph."""
    result = await triton.infer(model, {"latent": latents}, ["image"], clock)
    return list(result["image"])

"""SDXL through the real stack: the served images equal diffusers' SDXL pipelines' within 2/255."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from frontend.pipelines.noise import noise_batch, posterior_noise
from frontend.pipelines.sdxl import initial_latents
from tests.e2e.images import AUTH, assert_matches, png_base64, post, served_images
from tests.harness import Server

PROMPT = "a castle on a hill under a blue sky with white clouds"
NEGATIVE_PROMPT = "blurry, black and white"
GUIDANCE = 5.0
STEPS = 4


@pytest.fixture(scope="module")
def input_image() -> Image.Image:
    """A smooth, deterministic picture, 256x192: stripes and a disc."""
    y, x = np.mgrid[0:192, 0:256].astype(np.float32) / 255
    disc = ((x - 0.6) ** 2 + (y - 0.3) ** 2 < 0.02).astype(np.float32)
    rgb = np.stack([0.5 + 0.5 * np.sin(12 * x), disc, 1 - y], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


@pytest.mark.parametrize(
    ("width", "height", "negative_prompt"),
    [(256, 256, NEGATIVE_PROMPT), (384, 256, NEGATIVE_PROMPT), (256, 384, None)],
    ids=["square", "landscape", "portrait-zero-negative"],
)
def test_sdxl_text_to_image_matches_diffusers(
    server: Server, sdxl_diffusers_pipeline: Any, width: int, height: int, negative_prompt: str | None
) -> None:
    """Guidance 5 with n=2; without a negative prompt the unconditional embeddings are zeros
    (the checkpoint's force_zeros_for_empty_prompt)."""
    seed = 11
    body = {"model": "sdxl", "prompt": PROMPT, "width": width, "height": height, "seed": seed, "n": 2}
    body |= {"steps": STEPS, "guidance": GUIDANCE}
    served = served_images(server, body if negative_prompt is None else {**body, "negative_prompt": negative_prompt})
    reference = sdxl_diffusers_pipeline(
        prompt=PROMPT,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        num_images_per_prompt=2,
        latents=torch.from_numpy(initial_latents([seed, seed + 1], height, width)),
        output_type="np",
    ).images
    assert served[0].shape == (height, width, 3)
    assert_matches(served, reference)


def test_sdxl_img2img_matches_diffusers(server: Server, sdxl_checkpoint: Path, input_image: Image.Image) -> None:
    """Served img2img against StableDiffusionXLImg2ImgPipeline given the same starting latents.

    diffusers samples the VAE posterior and the noise with a torch generator. Here the starting latents
    are built as its prepare_latents builds them, from diffusers' own parts: its VAE's posterior of the
    image (`latent_dist`) sampled with the documented `posterior_noise` (`mean + std * noise`, as
    `retrieve_latents`), times the VAE's scaling_factor, noised by its scheduler's `add_noise` with the
    documented `initial_noise` at the first timestep that its `get_timesteps` keeps for `strength`.
    Given them as `latents=`, diffusers skips its encode and add_noise and runs the kept steps with
    guidance and decodes. The server runs the whole path with its own code (`sample_posterior`,
    `prepare_latents`, `img2img_start`) and its exported VAE encoder.
    """
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(sdxl_checkpoint)
    seeds, strength = [21, 22], 0.6
    body = {"model": "sdxl", "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "seed": seeds[0], "n": 2}
    body |= {"steps": STEPS, "guidance": GUIDANCE, "input_images": [png_base64(input_image)], "strength": strength}
    served = served_images(server, body)
    pixels = pipe.image_processor.preprocess(input_image)
    with torch.no_grad():
        posterior = pipe.vae.encode(pixels).latent_dist
    shape = tuple(posterior.mean.shape[1:])
    sample = posterior.mean + posterior.std * torch.from_numpy(np.stack([posterior_noise(s, shape) for s in seeds]))
    image_latents = pipe.vae.config.scaling_factor * sample
    pipe.scheduler.set_timesteps(STEPS)
    timesteps, _ = pipe.get_timesteps(STEPS, strength, "cpu", denoising_start=None)
    noise = torch.from_numpy(noise_batch(seeds, shape))
    latents = pipe.scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(len(seeds)))
    reference = pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        image=input_image,
        strength=strength,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        num_images_per_prompt=2,
        latents=latents,
        output_type="np",
    ).images
    assert served[0].shape == (192, 256, 3)
    assert_matches(served, reference)


def test_sdxl_strength_that_keeps_no_step_is_refused(server: Server, input_image: Image.Image) -> None:
    """diffusers runs int(steps x strength) steps: 2 x 0.3 keeps none, so there is no image to make."""
    body = {"model": "sdxl", "prompt": PROMPT, "steps": 2, "strength": 0.3, "input_images": [png_base64(input_image)]}
    response = post(server, body)
    assert (response.status_code, response.json()["error"]["param"]) == (400, "strength")


def test_sdxl_lists_its_buckets_bounds_and_parameters(server: Server) -> None:
    models = httpx.get(f"{server.base_url}/models", headers=AUTH).json()["data"]
    limits = next(model for model in models if model["id"] == "sdxl")["limits"]
    assert {"1024x1024", "1216x832", "832x1216"} <= set(limits["sizes"])
    assert limits["side_multiple"] == 16  # 8 (VAE) x 2 (the tiny UNet's one down block)
    assert (limits["default_steps"], limits["default_guidance"], limits["default_strength"]) == (30, 5.0, 0.3)
    assert set(limits["parameters"]) >= {"guidance", "negative_prompt", "input_images", "strength"}

"""Masked edits through the real stack: the served images equal diffusers' FluxInpaintPipeline's and
StableDiffusionXLInpaintPipeline's within 2/255, square and not; wrong masks are refused.

diffusers draws its noise and samples the VAE posterior with a torch generator. Here, as in the img2img
tests, diffusers is given the documented draws instead: the image latents from its own VAE's posterior
sampled with `posterior_noise` (passed as `image=`, which the pipelines take as latents as they are),
and as its initial noise `initial_noise` of each seed, which its `randn_tensor` returns (at strength 1,
`latents=` does the same, as the README says). The mask is OpenAI's turned into diffusers' mask image:
white where the alpha is 0. The server runs the whole path with its own code and exported VAE encoder.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from frontend.pipelines.noise import noise_batch, posterior_noise
from tests.e2e.images import AUTH, assert_matches, diffusers_mask, openai_mask, png_base64, post, served_images
from tests.harness import Server

PROMPT = "a red fox sitting in the snow, watercolor"
NEGATIVE_PROMPT = "blurry"
SEED = 17
STEPS = 4
SQUARE = (256, 256)
LANDSCAPE = (264, 200)
"""Not a multiple of 16: the edit is 256x192, the image and the mask resized to it (Lanczos)."""
PORTRAIT = (200, 264)


def picture(width: int, height: int) -> Image.Image:
    """A smooth, deterministic picture: gradients and a disc."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width
    disc = ((x - 0.4) ** 2 + (y - 0.5) ** 2 < 0.05).astype(np.float32)
    rgb = np.stack([x * (1 - disc) + disc, 0.5 + 0.5 * np.sin(8 * y), 1 - x * y], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


@dataclass(frozen=True)
class Model:
    name: str
    diffusers_module: str
    """The inpaint pipeline's module, whose `randn_tensor` draws the initial noise."""
    body: dict[str, Any]
    arguments: dict[str, Any]
    """What diffusers is given for the body's model-specific parameters."""


FLUX_SCHNELL = Model("flux-schnell", "diffusers.pipelines.flux.pipeline_flux_inpaint", {}, {"max_sequence_length": 256})
FLUX_DEV = Model(
    "flux-dev",
    "diffusers.pipelines.flux.pipeline_flux_inpaint",
    {"guidance": 4.5},
    {"guidance_scale": 4.5, "max_sequence_length": 512},
)
SDXL = Model(
    "sdxl",
    "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_inpaint",
    {"guidance": 5.0, "negative_prompt": NEGATIVE_PROMPT},
    {"guidance_scale": 5.0, "negative_prompt": NEGATIVE_PROMPT},
)


def inpaint_pipeline(model: Model, checkpoint: Path) -> Any:
    from diffusers import FluxInpaintPipeline, StableDiffusionXLInpaintPipeline

    kind = StableDiffusionXLInpaintPipeline if model is SDXL else FluxInpaintPipeline
    return kind.from_pretrained(checkpoint)


def image_latents(pipe: Any, image: Image.Image, width: int, height: int, seeds: list[int]) -> torch.Tensor:
    """The input image's latents as the server samples them: diffusers' own VAE posterior of the image
    (resized as its image processor does) sampled with the documented `posterior_noise`."""
    pixels = pipe.image_processor.preprocess(image, height=height, width=width)
    with torch.no_grad():
        posterior = pipe.vae.encode(pixels).latent_dist
    shape = tuple(posterior.mean.shape[1:])
    sample = posterior.mean + posterior.std * torch.from_numpy(np.stack([posterior_noise(s, shape) for s in seeds]))
    shift = pipe.vae.config.shift_factor or 0.0
    return (sample - shift) * pipe.vae.config.scaling_factor


def with_documented_noise(monkeypatch: pytest.MonkeyPatch, module: str, seeds: list[int]) -> None:
    """diffusers' initial noise, drawn by `randn_tensor`, made each seed's `initial_noise`."""

    def randn_tensor(shape: tuple[int, ...], **_: Any) -> torch.Tensor:
        return torch.from_numpy(noise_batch(seeds, tuple(shape[1:])))

    monkeypatch.setattr(f"{module}.randn_tensor", randn_tensor)


@pytest.mark.parametrize(
    ("model", "size", "strength"),
    [
        (FLUX_SCHNELL, SQUARE, 0.75),
        (FLUX_SCHNELL, LANDSCAPE, 1.0),
        (FLUX_DEV, SQUARE, 0.75),
        (FLUX_DEV, PORTRAIT, None),
        (SDXL, SQUARE, 1.0),
        (SDXL, LANDSCAPE, None),
    ],
    ids=["schnell-square", "schnell-landscape", "dev-square", "dev-portrait", "sdxl-square", "sdxl-landscape"],
)
def test_masked_edit_matches_diffusers_inpaint(
    server: Server,
    checkpoints: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    model: Model,
    size: tuple[int, int],
    strength: float | None,
) -> None:
    """Two images from one input image and mask (each its own noise and posterior sample); no
    `strength` is each pipeline's default (FLUX 0.6, SDXL 0.9999); at strength 1 SDXL starts from
    the noise alone."""
    image, mask = picture(*size), openai_mask(*size)
    width, height = (side - side % 16 for side in size)
    seeds = [SEED, SEED + 1]
    body = {"model": model.name, "prompt": PROMPT, "seed": SEED, "n": 2, "steps": STEPS, **model.body}
    body |= {"input_images": [png_base64(image)], "mask_image": png_base64(mask)}
    arguments = dict(model.arguments)
    if strength is not None:
        body["strength"] = arguments["strength"] = strength
    served = served_images(server, body)

    pipe = inpaint_pipeline(model, checkpoints[model.name])
    known = image_latents(pipe, image, width, height, seeds)
    if model is not SDXL:
        arguments["masked_image_latents"] = known  # read by FLUX.1 Fill's loop alone; it skips an encode
    if strength == 1.0:  # unpacked for FLUX too: FluxInpaintPipeline packs the `latents=` it is given
        arguments["latents"] = torch.from_numpy(noise_batch(seeds, tuple(known.shape[1:])))
    else:
        with_documented_noise(monkeypatch, model.diffusers_module, seeds)
    reference = pipe(
        prompt=PROMPT,
        image=known,
        mask_image=diffusers_mask(mask),
        height=height,
        width=width,
        num_inference_steps=STEPS,
        num_images_per_prompt=2,
        output_type="np",
        **arguments,
    ).images
    assert served[0].shape == (height, width, 3)
    print(f"{model.name} {width}x{height}: max difference {assert_matches(served, reference)}/255")


def test_unmasked_flux_dev_edit_matches_img2img_not_square(
    server: Server, checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The img2img parity tests cover flux-schnell square and SDXL 256x192; this adds FLUX.1-dev, its
    guidance and a size the input image sets by rounding down."""
    from diffusers import FluxImg2ImgPipeline

    image, seeds, strength = picture(*PORTRAIT), [SEED, SEED + 1], 0.75
    body = {"model": "flux-dev", "prompt": PROMPT, "seed": SEED, "n": 2, "steps": STEPS, "guidance": 4.5}
    served = served_images(server, body | {"input_images": [png_base64(image)], "strength": strength})
    pipe = FluxImg2ImgPipeline.from_pretrained(checkpoints["flux-dev"])
    with_documented_noise(monkeypatch, "diffusers.pipelines.flux.pipeline_flux_img2img", seeds)
    reference = pipe(
        prompt=PROMPT,
        image=image_latents(pipe, image, 192, 256, seeds),
        strength=strength,
        height=256,
        width=192,
        num_inference_steps=STEPS,
        guidance_scale=4.5,
        num_images_per_prompt=2,
        max_sequence_length=512,
        output_type="np",
    ).images
    assert served[0].shape == (256, 192, 3)
    print(f"flux-dev img2img 192x256: max difference {assert_matches(served, reference)}/255")


def png(image: Image.Image, image_format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return base64.b64encode(buffer.getvalue()).decode()


def refusal(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


EDIT = {"model": "flux-schnell", "prompt": PROMPT, "steps": 1, "input_images": [png(picture(*SQUARE))]}


def test_a_mask_of_another_size_than_the_image_is_refused_saying_both(server: Server) -> None:
    response = post(server, {**EDIT, "mask_image": png(openai_mask(256, 128))})
    assert refusal(response) == (400, "VALIDATION_4004", "mask_image")
    assert "256x128" in response.json()["error"]["message"]
    assert "256x256" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "mask",
    [
        png(openai_mask(*SQUARE).convert("RGB")),  # no alpha channel: nothing marks where to edit
        png(openai_mask(*SQUARE), "WEBP"),  # alpha, but not a PNG
        base64.b64encode(b"not an image").decode(),
        "not base64!",
    ],
    ids=["without-alpha", "webp", "not-an-image", "not-base64"],
)
def test_a_mask_that_is_no_png_with_alpha_is_refused(server: Server, mask: str) -> None:
    assert refusal(post(server, {**EDIT, "mask_image": mask})) == (400, "VALIDATION_4004", "mask_image")


def test_a_mask_without_an_input_image_is_refused(server: Server) -> None:
    body = {"model": "flux-schnell", "prompt": PROMPT, "mask_image": png(openai_mask(*SQUARE))}
    assert refusal(post(server, body)) == (400, "VALIDATION_4004", "mask_image")


def test_kontext_takes_no_mask(server: Server) -> None:
    """FLUX.1 Kontext's input image conditions the whole output: there is no region to keep."""
    body = {**EDIT, "model": "flux-kontext", "mask_image": png(openai_mask(*SQUARE))}
    assert refusal(post(server, body)) == (400, "VALIDATION_4006", "mask_image")
    models = httpx.get(f"{server.base_url}/models", headers=AUTH).json()["data"]
    takes_masks = {model["id"] for model in models if "mask_image" in model["limits"]["parameters"]}
    assert {"flux-schnell", "flux-dev", "sdxl"} <= takes_masks
    assert "flux-kontext" not in takes_masks


def test_the_mask_counts_as_input_pixels(guarded_server: Server) -> None:
    """The guarded server takes 2 x 256 x 256 input pixels: a 256x384 image fits, with its mask it
    does not (refused from the headers, before either is decoded)."""
    body = {**EDIT, "size": "256x256", "input_images": [png(picture(256, 384))]}
    assert post(guarded_server, body).status_code == 200
    response = post(guarded_server, {**body, "mask_image": png(openai_mask(256, 384))})
    assert refusal(response) == (400, "VALIDATION_4004", "input_images")

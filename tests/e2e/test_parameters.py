"""Model-specific parameters through the real stack: parity with diffusers, output formats, policy."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from openai import OpenAI
from PIL import Image

from frontend.pipelines.flux import img2img_start, initial_latents, pack_latents
from frontend.pipelines.noise import noise_batch, posterior_noise
from tests.e2e.images import AUTH, assert_matches, decode, png_base64, post, served_images
from tests.harness import API_KEY, Server, embedded_triton_url, load, paused_mid_flight, serving

PROMPT = "a gnarled oak tree in a misty meadow, morning light"


@pytest.fixture(scope="module")
def flux_dev(checkpoints: dict[str, Path]) -> Any:
    from diffusers import FluxPipeline

    return FluxPipeline.from_pretrained(checkpoints["flux-dev"])


@pytest.fixture(scope="module")
def input_image() -> Image.Image:
    """A smooth, deterministic picture: gradients and a disc, 256x256."""
    y, x = np.mgrid[0:256, 0:256].astype(np.float32) / 255
    disc = ((x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.06).astype(np.float32)
    rgb = np.stack([x, y * (1 - disc) + disc, 1 - x * y], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def test_flux_dev_with_guidance_matches_diffusers(server: Server, flux_dev: Any) -> None:
    served = served_images(
        server,
        {"model": "flux-dev", "prompt": PROMPT, "size": "256x256", "seed": 3, "n": 2, "steps": 6, "guidance": 4.5},
    )
    reference = flux_dev(
        prompt=PROMPT,
        height=256,
        width=256,
        num_inference_steps=6,
        guidance_scale=4.5,
        num_images_per_prompt=2,
        max_sequence_length=512,
        latents=torch.from_numpy(initial_latents([3, 4], 256, 256)),
        output_type="np",
    ).images
    assert_matches(served, reference)


def test_flux_negative_prompt_uses_true_cfg_like_diffusers(server: Server, diffusers_pipeline: Any) -> None:
    body = {"prompt": PROMPT, "negative_prompt": "blurry", "true_cfg_scale": 3.0, "size": "256x256", "seed": 9}
    reference = diffusers_pipeline(
        prompt=PROMPT,
        negative_prompt="blurry",
        true_cfg_scale=3.0,
        height=256,
        width=256,
        num_inference_steps=4,
        max_sequence_length=256,
        latents=torch.from_numpy(initial_latents([9], 256, 256)),
        output_type="np",
    ).images
    assert_matches(served_images(server, body), reference)


def test_flux_img2img_matches_diffusers(server: Server, tiny_checkpoint: Path, input_image: Image.Image) -> None:
    """Served img2img against FluxImg2ImgPipeline given the same starting latents.

    diffusers samples the VAE posterior and the noise with a torch generator; here the starting
    latents are built from diffusers' own VAE encoding of the image, sampled with the documented
    numpy noise (`posterior_noise`, `initial_noise`) and noised with its scheduler's `scale_noise`,
    then diffusers runs the remaining steps. The server does the same with its exported VAE encoder.
    """
    from diffusers import FluxImg2ImgPipeline

    pipe = FluxImg2ImgPipeline.from_pretrained(tiny_checkpoint)
    seed, steps, strength = 21, 4, 0.6
    served = served_images(
        server, {"prompt": PROMPT, "input_images": [png_base64(input_image)], "strength": strength, "seed": seed}
    )
    pixels = pipe.image_processor.preprocess(input_image, height=256, width=256)
    with torch.no_grad():
        posterior = pipe.vae.encode(pixels).latent_dist
    sample = posterior.mean + posterior.std * torch.from_numpy(posterior_noise(seed, (16, 32, 32)))
    image_latents = (sample - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    pipe.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=0.0)
    start = img2img_start(steps, strength)
    sigma = pipe.scheduler.sigmas[start]
    noised = sigma * torch.from_numpy(noise_batch([seed], (16, 32, 32))) + (1.0 - sigma) * image_latents
    reference = pipe(
        prompt=PROMPT,
        image=input_image,
        strength=strength,
        height=256,
        width=256,
        num_inference_steps=steps,
        max_sequence_length=256,
        latents=torch.from_numpy(pack_latents(noised.numpy())),
        output_type="np",
    ).images
    assert served[0].shape == (256, 256, 3)
    assert_matches(served, reference)


def test_one_input_image_starts_every_output_and_differs_from_text_to_image(
    server: Server, input_image: Image.Image
) -> None:
    body = {"prompt": PROMPT, "input_images": [png_base64(input_image)], "n": 2, "seed": 5}
    from_image = served_images(server, body)
    from_text = served_images(server, {"prompt": PROMPT, "size": "256x256", "seed": 5})
    assert len(from_image) == 2
    assert not np.array_equal(from_image[0], from_text[0])


@pytest.mark.parametrize(("output_format", "pillow_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_format_decodes_as_that_format(server: Server, output_format: str, pillow_format: str) -> None:
    client = OpenAI(api_key=API_KEY, base_url=server.base_url)
    response = client.images.generate(prompt=PROMPT, size="256x256", output_format=output_format)  # type: ignore[arg-type]
    image = decode(response.data[0].b64_json or "")
    assert (image.format, image.size) == (pillow_format, (256, 256))


@pytest.mark.parametrize("output_format", ["jpeg", "webp"])
def test_lower_output_quality_gives_fewer_bytes(server: Server, output_format: str) -> None:
    def size(quality: int) -> int:
        body = {
            "prompt": PROMPT,
            "size": "512x512",
            "seed": 1,
            "output_format": output_format,
            "output_quality": quality,
        }
        return len(base64.b64decode(post(server, body).json()["data"][0]["b64_json"]))

    assert size(20) < size(95)


def test_output_compression_is_openai_inverse_quality(server: Server) -> None:
    base = {"prompt": PROMPT, "size": "256x256", "seed": 1, "output_format": "jpeg"}
    by_quality = post(server, {**base, "output_quality": 30}).json()["data"][0]["b64_json"]
    by_compression = post(server, {**base, "output_compression": 70}).json()["data"][0]["b64_json"]
    assert by_quality == by_compression


def test_hd_quality_runs_twice_the_default_steps(server: Server) -> None:
    base = {"prompt": PROMPT, "size": "256x256", "seed": 2}
    hd = served_images(server, {**base, "quality": "hd"})
    assert np.array_equal(hd[0], served_images(server, {**base, "steps": 8})[0])
    assert not np.array_equal(hd[0], served_images(server, base)[0])


def test_natural_style_lowers_guidance(server: Server) -> None:
    base = {"model": "flux-dev", "prompt": PROMPT, "size": "256x256", "seed": 2, "steps": 4}
    natural = served_images(server, {**base, "style": "natural"})
    assert np.array_equal(natural[0], served_images(server, {**base, "guidance": 3.5 * 0.7})[0])


def test_models_list_each_models_parameters(server: Server) -> None:
    models = {model["id"]: model for model in httpx.get(f"{server.base_url}/models", headers=AUTH).json()["data"]}
    assert "guidance" in models["flux-dev"]["limits"]["parameters"]
    assert "guidance" not in models["flux-schnell"]["limits"]["parameters"]
    assert models["flux-dev"]["limits"]["default_steps"] == 28


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"guidance": 3.0}, "VALIDATION_4006", "guidance"),
        ({"style": "natural"}, "VALIDATION_4006", "style"),
        ({"model": "flux-dev", "guidance": 25.0}, "VALIDATION_4004", "guidance"),
        ({"strength": 0}, "VALIDATION_4004", "strength"),
        ({"output_format": "gif"}, "VALIDATION_4004", "output_format"),
        ({"output_format": "png", "output_quality": 50}, "VALIDATION_4004", "output_quality"),
        ({"output_format": "jpeg", "output_quality": 0}, "VALIDATION_4004", "output_quality"),
        (
            {"output_format": "jpeg", "output_quality": 50, "output_compression": 50},
            "VALIDATION_4004",
            "output_compression",
        ),
        ({"input_images": ["not base64!"]}, "VALIDATION_4004", "input_images"),
        ({"input_images": [base64.b64encode(b"plain text").decode()]}, "VALIDATION_4004", "input_images"),
        ({"input_images": []}, "VALIDATION_4004", "input_images"),
    ],
)
def test_bad_parameter_gets_its_code(server: Server, body: dict[str, Any], code: str, param: str) -> None:
    response = post(server, {"prompt": PROMPT, "size": "256x256", **body})
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (code, param)


@pytest.fixture
def one_slot_server(model_repository: Path, tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own whose models each run one generation at a time."""
    with serving(model_repository, tmp_path, settings={"IMAGEGEN_RUNNING_PER_MODEL": "1"}) as running:
        yield running


def test_bad_parameters_are_refused_while_every_slot_of_the_model_is_held(
    one_slot_server: Server, input_image: Image.Image
) -> None:
    """Every parameter check runs before admission: a bad value is answered at once, never after
    waiting for a running slot (here held, with Triton paused, by another generation)."""
    server, image = one_slot_server, png_base64(input_image)
    holder = {"model": "sdxl", "prompt": PROMPT, "size": "256x256", "steps": 30}
    bad = [
        ({"steps": 2, "strength": 0.3, "input_images": [image]}, "strength"),  # SDXL runs int(2 x 0.3) = 0 steps
        ({"steps": 101}, "steps"),
        ({"size": "1792x1024"}, "size"),
    ]
    with ThreadPoolExecutor(1) as pool:
        headers = {**AUTH, "X-Progress-Id": "holds-the-slot"}
        held = pool.submit(
            httpx.post, f"{server.base_url}/images/generations", json=holder, headers=headers, timeout=120
        )
        with paused_mid_flight(server, ["holds-the-slot"]):
            assert load(server, "sdxl") == {"running": 1, "queued": 0}
            for body, param in bad:
                response = post(server, {"model": "sdxl", "prompt": PROMPT, **body})
                assert (response.status_code, response.json()["error"]["param"]) == (400, param)
            assert load(server, "sdxl") == {"running": 1, "queued": 0}
        assert held.result().status_code == 200


def test_input_image_count_must_be_one_or_n(server: Server, input_image: Image.Image) -> None:
    images = [png_base64(input_image)] * 2
    response = post(server, {"prompt": PROMPT, "input_images": images, "n": 3})
    assert (response.status_code, response.json()["error"]["param"]) == (400, "input_images")


def test_decompression_bomb_is_refused(server: Server) -> None:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")  # a few KB that decode to 400 Mpx
    response = post(server, {"prompt": PROMPT, "input_images": [base64.b64encode(buffer.getvalue()).decode()]})
    assert (response.status_code, response.json()["error"]["param"]) == (400, "input_images")


@pytest.fixture
def counted_server(schnell_repository: Path, tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own: the exact counts it reads in Triton's statistics are moved by its
    request alone, never by work another test left running on a shared server."""
    with serving(schnell_repository, tmp_path) as running:
        yield running


def test_n_images_share_one_denoiser_execution_per_step(counted_server: Server) -> None:
    server = counted_server

    def transformer_counts() -> tuple[int, int]:
        url = f"http://{embedded_triton_url(server)}/v2/models/flux-schnell_transformer/stats"
        stats = httpx.get(url).json()["model_stats"][0]
        return stats["inference_count"], stats["execution_count"]

    inferences, executions = transformer_counts()
    served_images(server, {"prompt": PROMPT, "size": "256x256", "n": 5, "steps": 3})
    after_inferences, after_executions = transformer_counts()
    assert (after_inferences - inferences, after_executions - executions) == (15, 3)


def test_model_specific_parameters_pass_through_the_sdk_extra_body(server: Server) -> None:
    client = OpenAI(api_key=API_KEY, base_url=server.base_url)
    common = {"model": "sdxl", "prompt": PROMPT, "size": "256x256", "output_format": "webp"}
    extra = {"steps": 3, "guidance": 6.0, "negative_prompt": "blurry", "seed": 11}
    response = client.images.generate(**common, extra_body=extra)  # type: ignore[call-overload]
    same = post(server, {**common, **extra}).json()["data"][0]["b64_json"]
    assert response.data[0].b64_json == same
    assert decode(same).format == "WEBP"

"""FLUX.1 Kontext through the real stack: parity with diffusers' FluxKontextPipeline through the openai
SDK, the output size its input image sets, LoRA adapters, and `strength` refused before admission.

The module has a server of its own, serving flux-kontext alone (with the image-safety model): the
refusal test holds its only generation slot, and the adapter it registers is listed by /v1/models,
neither of which another module's requests may touch.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from openai import OpenAI
from PIL import Image

from export.lora import build_tiny_lora
from frontend.pipelines.flux import initial_latents
from frontend.pipelines.noise import image_seeds
from tests.e2e.images import AUTH, assert_matches, decode, png_base64
from tests.harness import API_KEY, Server, imagegen, load, paused_mid_flight, serving

MODEL = "flux-kontext"
PROMPT = "make the sky above the castle stormy, oil painting"
STEPS = 2
SEED = 11
KONTEXT_SETTINGS = {
    "IMAGEGEN_REQUESTS_PER_MINUTE": "100000",
    # One generation at a time and none waiting: a request that passed its checks while the slot is
    # held gets a 429, so a 400 then shows the check ran before admission.
    "IMAGEGEN_RUNNING_PER_MODEL": "1",
    "IMAGEGEN_QUEUED_PER_MODEL": "0",
    # Two 1024x1024 images at STEPS, each beside its 1024x1024 input image's tokens: the parity tests'
    # largest request, exactly.
    "IMAGEGEN_MAX_WORK_PER_REQUEST": str(2 * (1024 * 1024 * 2) * STEPS),
}


@pytest.fixture(scope="module")
def kontext_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("kontext-repository")
    for folder in model_repository.iterdir():
        if folder.name.startswith(f"{MODEL}_") or folder.name == "image_safety":
            shutil.copytree(folder, repository / folder.name)
    return repository


@pytest.fixture(scope="module")
def kontext_server(kontext_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = {**KONTEXT_SETTINGS, "IMAGEGEN_MODEL_REPOSITORY": str(kontext_repository)}
    with serving(kontext_repository, tmp_path_factory.mktemp("kontext-state"), settings=settings) as running:
        yield running


@pytest.fixture(scope="module")
def kontext(checkpoints: dict[str, Path]) -> Any:
    from diffusers import FluxKontextPipeline

    return FluxKontextPipeline.from_pretrained(checkpoints[MODEL])


def picture(width: int, height: int) -> Image.Image:
    """A smooth, deterministic picture of any size: gradients and a disc."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / (height - 1), x / (width - 1)
    disc = ((x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.06).astype(np.float32)
    rgb = np.stack([x, y * (1 - disc) + disc, 1 - x * y], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def generate(server: Server, image: Image.Image, n: int = 1, **extra: Any) -> list[np.ndarray]:
    """Images through the openai SDK, the input image and Kontext's parameters in `extra_body`."""
    client = OpenAI(api_key=API_KEY, base_url=server.base_url)
    body = {"input_images": [png_base64(image)], "steps": STEPS, "seed": SEED, **extra}
    response = client.images.generate(model=MODEL, prompt=PROMPT, n=n, extra_body=body)
    return [np.asarray(decode(item.b64_json or ""), dtype=np.int16) for item in response.data or ()]


def reference(kontext: Any, image: Image.Image, width: int, height: int, n: int = 1) -> np.ndarray:
    """diffusers' images for the request `generate` sends: its default guidance, each image's
    documented initial noise (`initial_latents` of the per-image seeds) as `latents`."""
    latents = initial_latents(image_seeds(SEED, n), height, width)
    return kontext(
        image=image,
        prompt=PROMPT,
        height=height,
        width=width,
        num_inference_steps=STEPS,
        guidance_scale=2.5,
        num_images_per_prompt=n,
        max_sequence_length=512,
        latents=torch.from_numpy(latents),
        output_type="np",
    ).images


@pytest.mark.parametrize(
    ("input_size", "output_size"),
    [((512, 512), (1024, 1024)), ((600, 400), (1248, 832))],
    ids=["square", "three-by-two"],
)
def test_kontext_matches_diffusers_at_the_size_its_input_image_sets(
    kontext_server: Server, kontext: Any, input_size: tuple[int, int], output_size: tuple[int, int]
) -> None:
    """The output takes Kontext's trained resolution nearest the input image's aspect ratio
    (diffusers' PREFERRED_KONTEXT_RESOLUTIONS), and the input image conditions both outputs."""
    image = picture(*input_size)
    served = generate(kontext_server, image, n=2)
    width, height = output_size
    assert [item.shape for item in served] == [(height, width, 3)] * 2
    assert not np.array_equal(served[0], served[1])  # each image its own seed
    assert_matches(served, reference(kontext, image, width, height, n=2))


def test_the_input_image_changes_the_output(kontext_server: Server) -> None:
    plain, flipped = picture(512, 512), picture(512, 512).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert not np.array_equal(generate(kontext_server, plain)[0], generate(kontext_server, flipped)[0])


def test_models_list_kontext_with_its_parameters(kontext_server: Server) -> None:
    models = httpx.get(f"{kontext_server.base_url}/models", headers=AUTH).json()["data"]
    parameters = {model["id"]: model["limits"]["parameters"] for model in models}[MODEL]
    assert {"input_images", "guidance", "lora_weights"} <= set(parameters)
    assert "strength" not in parameters


def test_strength_is_refused_before_admission(kontext_server: Server) -> None:
    """Kontext's input image conditions the generation; it is not an img2img start to noise."""
    body = {"model": MODEL, "prompt": PROMPT, "input_images": [png_base64(picture(512, 512))], "steps": STEPS}
    held = threading.Thread(
        target=httpx.post,
        args=(f"{kontext_server.base_url}/images/generations",),
        kwargs={"json": body, "headers": {**AUTH, "X-Progress-Id": "holds-the-slot"}, "timeout": 120},
    )
    held.start()
    try:
        with paused_mid_flight(kontext_server, ["holds-the-slot"]):
            assert load(kontext_server, MODEL) == {"running": 1, "queued": 0}
            refused = httpx.post(
                f"{kontext_server.base_url}/images/generations", json={**body, "strength": 0.5}, headers=AUTH
            )
            full = httpx.post(f"{kontext_server.base_url}/images/generations", json=body, headers=AUTH)
    finally:
        held.join()
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("VALIDATION_4006", "strength")
    assert full.status_code == 429  # the same request without `strength` reached admission


def test_the_work_budget_counts_the_input_images_tokens(kontext_server: Server) -> None:
    """A Kontext step carries the input image's tokens beside the noise's: one more step over the
    parity tests' request is past the budget only when they are counted."""
    body = {"model": MODEL, "prompt": PROMPT, "input_images": [png_base64(picture(512, 512))], "n": 2}
    refused = httpx.post(
        f"{kontext_server.base_url}/images/generations", json={**body, "steps": STEPS + 1}, headers=AUTH
    )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("VALIDATION_4004", "steps")
    assert "1048576 conditioning" in error["message"]


def test_lora_adapter_matches_diffusers_load_lora_weights(
    kontext_server: Server, kontext_repository: Path, kontext: Any, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    adapter = build_tiny_lora(checkpoints[MODEL], tmp_path / "adapter", seed=6, rank=4, alpha=8.0)
    imagegen(kontext_server, "lora", "add", "kontext-style", "--file", str(adapter), "--model", MODEL)
    try:
        image = picture(512, 512)
        served = generate(kontext_server, image, lora_weights=["kontext-style"], lora_scale=[0.8])
        kontext.load_lora_weights(adapter, adapter_name="kontext-style")
        kontext.set_adapters(["kontext-style"], adapter_weights=[0.8])
        try:
            expected = reference(kontext, image, 1024, 1024)
        finally:
            kontext.delete_adapters(["kontext-style"])
    finally:
        imagegen(kontext_server, "lora", "remove", "kontext-style")
    assert_matches(served, expected)
    assert np.abs(served[0] - (reference(kontext, image, 1024, 1024) * 255).round()).max() > 20

"""POST /v1/images/generations end to end: the real openai client, frontend and tritonserver."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from openai import OpenAI
from PIL import Image

from frontend.pipelines.flux import initial_latents
from tests.e2e.images import assert_matches, decode, post, served_images
from tests.harness import API_KEY, Server

PROMPT = "A Hanseatic trading ship entering Lübeck harbor at dawn, painted in oils"


@pytest.mark.parametrize(("width", "height"), [(256, 256), (384, 256)])
def test_served_image_matches_diffusers(server: Server, diffusers_pipeline: Any, width: int, height: int) -> None:
    seed, steps = 7, 4
    served = served_images(server, {"prompt": PROMPT, "width": width, "height": height, "seed": seed, "n": 2})
    expected = diffusers_pipeline(
        prompt=PROMPT,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=0.0,
        max_sequence_length=256,
        num_images_per_prompt=2,
        latents=torch.from_numpy(initial_latents([seed, seed + 1], height, width)),
        output_type="np",
    ).images
    assert served[0].shape == (height, width, 3)
    assert_matches(served, expected)


def test_spec_python_example_writes_a_1024_png(server: Server, tmp_path: Path) -> None:
    client = OpenAI(api_key=API_KEY, base_url=server.base_url)
    response = client.images.generate(
        model="flux-schnell",
        prompt=PROMPT,
        n=1,
        size="1024x1024",
    )
    ship = tmp_path / "ship.png"
    ship.write_bytes(base64.b64decode(response.data[0].b64_json or ""))
    with Image.open(ship) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (1024, 1024), "RGB")


def test_spec_curl_example_writes_a_png(server: Server, tmp_path: Path) -> None:
    body = json.dumps({"model": "flux-schnell", "prompt": PROMPT, "n": 1, "size": "1024x1024"})
    command = ["curl", "-sS", f"{server.base_url}/images/generations", "-H", f"Authorization: Bearer {API_KEY}"]
    command += ["-H", "Content-Type: application/json", "-d", body]
    output = subprocess.run(command, check=True, capture_output=True).stdout
    assert decode(json.loads(output)["data"][0]["b64_json"]).size == (1024, 1024)


def test_default_model_is_the_dall_e_3_alias(server: Server) -> None:
    client = OpenAI(api_key=API_KEY, base_url=server.base_url)
    response = client.images.generate(prompt="a lighthouse", size="256x256")
    assert decode(response.data[0].b64_json or "").size == (256, 256)


def test_n3_gives_three_different_images(server: Server) -> None:
    response = post(server, {"prompt": "a red fox", "size": "256x256", "n": 3})
    images = [item["b64_json"] for item in response.json()["data"]]
    assert len(set(images)) == 3


def test_same_seed_gives_identical_png(server: Server) -> None:
    body = {"prompt": "a red fox", "size": "256x256", "seed": 1234}
    first, second = (post(server, body).json()["data"][0] for _ in range(2))
    assert first["b64_json"] == second["b64_json"]
    assert first["seed"] == 1234


def test_image_i_of_a_batch_is_the_image_of_seed_plus_i(server: Server) -> None:
    batch = post(server, {"prompt": "a red fox", "size": "256x256", "seed": 40, "n": 3}).json()["data"]
    alone = post(server, {"prompt": "a red fox", "size": "256x256", "seed": 42}).json()["data"][0]
    assert [item["seed"] for item in batch] == [40, 41, 42]
    assert batch[2]["b64_json"] == alone["b64_json"]


def test_response_has_the_spec_shape(server: Server) -> None:
    body = post(server, {"prompt": "a red fox", "size": "256x256"}).json()
    assert set(body) == {
        *("created", "data", "energy_cost", "credits_cost"),
        *("size", "quality", "output_format", "background", "usage"),  # gpt-image's (test_edits.py)
    }
    assert body["energy_cost"] > 0
    assert body["credits_cost"] > 0  # the operator's key is on the studio plan, which has a price
    assert "revised_prompt" not in body["data"][0]


def test_width_and_height_give_a_free_size(server: Server) -> None:
    body = post(server, {"prompt": "a red fox", "width": 512, "height": 320}).json()
    assert decode(body["data"][0]["b64_json"]).size == (512, 320)


def test_key_is_accepted_as_x_api_key(server: Server) -> None:
    response = httpx.post(
        f"{server.base_url}/images/generations",
        json={"prompt": "a red fox", "size": "256x256"},
        headers={"x-api-key": API_KEY},
    )
    assert response.status_code == 200


def test_models_lists_public_ids(server: Server) -> None:
    client = OpenAI(api_key=API_KEY, base_url=server.base_url)
    assert {model.id for model in client.models.list()} == {
        "flux-schnell",
        "flux-dev",
        "sdxl",
        "flux-kontext",
        "dall-e-3",
    }


def test_healthz_answers(server: Server) -> None:
    assert httpx.get(f"{server.root}/healthz").json() == {"status": "ok"}


def test_spec_node_example_writes_a_1024_png(server: Server, tmp_path: Path) -> None:
    example = Path(__file__).parent / "node" / "spec_example.mjs"
    env = {**os.environ, "IMAGEGEN_API_KEY": API_KEY, "IMAGEGEN_BASE_URL": server.base_url}
    subprocess.run(["node", str(example), str(tmp_path / "ship.png")], check=True, env=env, timeout=120)
    with Image.open(tmp_path / "ship.png") as image:
        assert (image.format, image.size) == ("PNG", (1024, 1024))

"""Image requests over the socket and their comparison with diffusers, shared by the e2e tests."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from tests.harness import API_KEY, Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TOLERANCE = 2  # per channel, out of 255


def post(server: Server, body: dict[str, Any], timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{server.base_url}/images/generations", json=body, headers=AUTH, timeout=timeout)


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def served_images(server: Server, body: dict[str, Any], timeout: float = 120) -> list[np.ndarray]:
    response = post(server, body, timeout)
    assert response.status_code == 200, response.text
    return [np.asarray(decode(item["b64_json"]), dtype=np.int16) for item in response.json()["data"]]


def assert_matches(served: list[np.ndarray], reference: np.ndarray) -> int:
    """Each served image within TOLERANCE of diffusers' float image, rounded as diffusers' numpy_to_pil;
    returns the largest difference, out of 255."""
    assert len(served) == len(reference)
    differences = [
        int(np.abs(image - (expected * 255).round().astype(np.int16)).max())
        for image, expected in zip(served, reference, strict=True)
    ]
    assert max(differences) <= TOLERANCE, f"max difference {max(differences)}/255"
    return max(differences)


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def openai_mask(width: int, height: int) -> Image.Image:
    """An edit mask in OpenAI's convention: RGBA, fully transparent (edit) in an ellipse right of centre,
    opaque elsewhere but for a half-transparent band, which is kept (only alpha 0 marks an edit)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[(x - 0.62) ** 2 / 0.06 + (y - 0.45) ** 2 / 0.1 < 1] = 0
    alpha[(y > 0.1) & (y < 0.15)] = 128
    return Image.fromarray(np.dstack([np.full((height, width, 3), 90, dtype=np.uint8), alpha]), mode="RGBA")


def diffusers_mask(mask: Image.Image) -> Image.Image:
    """OpenAI's mask as diffusers' `mask_image`: white (repaint) where the alpha is 0, black elsewhere."""
    alpha = np.asarray(mask.getchannel("A"))
    return Image.fromarray(np.where(alpha == 0, 255, 0).astype(np.uint8), mode="L")

"""The API's own PNG writer: any decoder reads back the exact pixels."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from frontend.imaging import encode_image_base64, png_bytes


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (33, 65), (256, 192)])
def test_png_decodes_to_the_exact_pixels(shape: tuple[int, int]) -> None:
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    data = png_bytes(pixels)
    Image.open(io.BytesIO(data)).verify()  # every chunk's CRC
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (shape[1], shape[0]))
    assert np.array_equal(np.asarray(image), pixels)


def test_the_api_answers_png_in_base64() -> None:
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:, :, 0] = np.arange(16, dtype=np.uint8) * 16  # rows alike: the Up filter leaves zeros
    decoded = Image.open(io.BytesIO(base64.b64decode(encode_image_base64(pixels, "png", None))))
    assert np.array_equal(np.asarray(decoded), pixels)

"""Images in and out of the API: response encoding and input image decoding, with their limits.

Both are CPU-bound, so callers run them off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image

from frontend.api.errors import InvalidParameter

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
DEFAULT_QUALITY = 90
MAX_INPUT_PIXELS = 4096 * 4096
"""An input image may not decode to more pixels than this; a small file that claims more (a
decompression bomb) is refused before its pixels are decoded."""


def encode_image_base64(pixels: np.ndarray, output_format: str, quality: int | None) -> str:
    """PNG is lossless (quality does not apply); JPEG and WebP default to quality 90."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels, mode="RGB")
    if output_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format=PIL_FORMATS[output_format], quality=quality or DEFAULT_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_input_image(data: str, param: str) -> Image.Image:
    """A base64 image (or a data: URL holding one) as RGB; anything else is the client's error."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(f"`{param}` is not valid base64.", param=param) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > MAX_INPUT_PIXELS:
                raise InvalidParameter(
                    f"`{param}` is {image.width}x{image.height}; input images may have at most "
                    f"{MAX_INPUT_PIXELS} pixels.",
                    param=param,
                )
            image.load()
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning, SyntaxError, ValueError):
        raise InvalidParameter(f"`{param}` is not a PNG, JPEG or WebP image Pillow can read.", param=param) from None
    return image.convert("RGB")


def image_to_array(image: Image.Image, width: int, height: int) -> np.ndarray:
    """RGB float32 in [0, 1], (3, height, width), resized with Lanczos as diffusers' VaeImageProcessor does."""
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0

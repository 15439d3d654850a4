"""Images in and out of the API: response encoding and input image decoding, with their limits.

Input images are opened (header only) and then decoded, in two steps, so that a request's budgets
are checked in between. Both steps are CPU-bound, so callers run them off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
import numpy.typing as npt
from PIL import Image

from frontend.errors import InvalidParameter

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
INPUT_FORMATS = tuple(PIL_FORMATS.values())
"""Input images are read in the formats responses are written in, and no other: each format Pillow
parses is code an attacker reaches (a BMP was decoded and used before this was set)."""
DEFAULT_QUALITY = 90
MAX_INPUT_PIXELS = 4096 * 4096
"""An input image may not decode to more pixels than this; a small file that claims more (a
decompression bomb) is refused before its pixels are decoded."""


def encode_image_base64(pixels: npt.NDArray[np.uint8], output_format: str, quality: int | None) -> str:
    """PNG is lossless (quality does not apply); JPEG and WebP default to quality 90."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels, mode="RGB")
    if output_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format=PIL_FORMATS[output_format], quality=quality or DEFAULT_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def open_input_image(data: str | bytes, param: str) -> Image.Image:
    """An image's bytes (a multipart file's), or base64 (or a data: URL holding it), opened from its
    header alone: its format and size are known, none of its pixels decoded, so every budget is checked
    before that work (`image_to_array` does it). Only the formats the API promises are even parsed."""
    raw = data if isinstance(data, bytes) else _base64_bytes(data, param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=INPUT_FORMATS)
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning, SyntaxError, ValueError):
        raise _unreadable(param) from None
    if image.width * image.height > MAX_INPUT_PIXELS:
        raise InvalidParameter(
            f"`{param}` is {image.width}x{image.height}; input images may have at most {MAX_INPUT_PIXELS} pixels.",
            param=param,
        )
    return image


def _base64_bytes(data: str, param: str) -> bytes:
    """The bytes of a base64 string or of a data: URL holding one."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(f"`{param}` is not valid base64.", param=param) from None


def image_to_array(image: Image.Image, width: int, height: int, param: str) -> npt.NDArray[np.float32]:
    """Decode an opened image: RGB float32 in [0, 1], (3, height, width), resized with Lanczos as
    diffusers' VaeImageProcessor does. Data that breaks off or lies past its header is the client's error."""
    try:
        rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError):
        raise _unreadable(param) from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0


def _unreadable(param: str) -> InvalidParameter:
    return InvalidParameter(f"`{param}` is not a PNG, JPEG or WebP image Pillow can read.", param=param)

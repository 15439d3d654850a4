"""Image encoding for responses; CPU-bound, so callers run it off the event loop."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def encode_png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")

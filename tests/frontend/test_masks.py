"""Edit masks: OpenAI's alpha convention decoded as diffusers' inpaint pipelines read their mask images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from frontend.errors import InvalidParameter
from frontend.imaging import mask_to_array, open_mask
from frontend.pipelines.inpainting import latent_mask
from tests.e2e.images import diffusers_mask, openai_mask


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("size", "output"),
    [((256, 256), (256, 256)), ((264, 200), (256, 192)), ((301, 177), (288, 176))],
    ids=["same-size", "landscape-resized", "odd-resized"],
)
def test_mask_is_what_diffusers_mask_processor_makes_of_the_white_where_alpha_is_0(
    size: tuple[int, int], output: tuple[int, int]
) -> None:
    mask = openai_mask(*size)
    ours = mask_to_array(open_mask(png_bytes(mask), size, "mask"), *output, "mask")
    processor = VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True)
    theirs = processor.preprocess(diffusers_mask(mask), height=output[1], width=output[0])
    np.testing.assert_array_equal(ours, theirs.numpy()[0])
    # prepare_mask_latents' nearest interpolation to the latents' size.
    latents = torch.nn.functional.interpolate(theirs, size=(output[1] // 8, output[0] // 8))
    np.testing.assert_array_equal(latent_mask(ours[np.newaxis], 8), latents.numpy())


def test_a_palette_png_with_transparency_is_a_mask() -> None:
    mask = openai_mask(64, 64).quantize(colors=3, method=Image.Quantize.FASTOCTREE)
    assert mask.mode == "P"
    decoded = mask_to_array(open_mask(png_bytes(mask), (64, 64), "mask"), 64, 64, "mask")
    assert 0 < decoded.mean() < 1


@pytest.mark.parametrize(
    ("image", "size", "says"),
    [
        (openai_mask(64, 64).convert("RGB"), (64, 64), "no alpha channel"),
        (openai_mask(64, 48), (64, 64), "64x48"),
    ],
    ids=["without-alpha", "another-size"],
)
def test_a_mask_is_refused_from_its_header(image: Image.Image, size: tuple[int, int], says: str) -> None:
    with pytest.raises(InvalidParameter, match=says) as refused:
        open_mask(png_bytes(image), size, "mask")
    assert refused.value.param == "mask"

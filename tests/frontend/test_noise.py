"""The documented seed -> noise function, pinned by value (README, Seeds and reproducibility).

Every parity test hands diffusers the server's own `initial_latents`, so a change to the seed ->
noise function would pass them all while every image a user reproduces elsewhere changed. These
values are numpy's PCG64 float32 standard normals, written out once: a change to the generator, the
dtype, the draw order or the FLUX packing fails here. They are compared to 1e-6 relative, far below
any change of generator and above a libm's last-bit difference in the ziggurat's tail.
"""

from __future__ import annotations

import numpy as np
import pytest

from frontend.pipelines import flux, sdxl
from frontend.pipelines.noise import initial_noise, noise_batch, posterior_noise

RTOL = 1e-6

Golden = tuple[tuple[float, ...], float]
"""The first four values of a draw in C order, and its last."""

INITIAL: dict[tuple[int, tuple[int, ...]], Golden] = {
    (0, (4,)): ((1.117622, -1.3871249, -0.4265716, -0.80358726), -0.80358726),
    (42, (2, 3)): ((0.14190717, -1.6685079, -1.332108, 0.58255345), 1.7554446),
    (2**32 - 1, (16, 2, 2)): ((-0.33467764, -0.4611296, 0.20726122, 0.20890166), -0.32690918),
    (7, (4, 8, 12)): ((1.5219693, -1.1441058, 1.1501616, -1.7846532), -0.0735415),
}
POSTERIOR: dict[tuple[int, tuple[int, ...]], Golden] = {
    (0, (4,)): ((0.60142773, -0.074993245, 0.059693195, -0.03200609), -0.03200609),
    (42, (2, 3)): ((0.13962899, 0.41919115, -0.52172035, -0.1815749), 2.568927),
    (2**32 - 1, (16, 2, 2)): ((-0.75115925, -0.20652744, -0.04387835, 1.2532799), 1.0143228),
    (7, (4, 8, 12)): ((-0.043908168, 0.50966156, -0.35634458, 0.87912345), -1.2473003),
}
SEED_3 = (2.41715, 0.14276257, -0.5126867, -0.09671081, 0.18485908, 1.6773716, -0.7508392, 0.60710436)
"""initial_noise(3, shape)'s first eight values, whatever the shape: rows 0 and 1 of a 4-wide latent."""


def assert_golden(drawn: np.ndarray, shape: tuple[int, ...], golden: Golden) -> None:
    first, last = golden
    assert drawn.shape == shape and drawn.dtype == np.float32
    np.testing.assert_allclose(drawn.ravel()[:4], first, rtol=RTOL, atol=0)
    np.testing.assert_allclose(drawn.ravel()[-1], last, rtol=RTOL, atol=0)


@pytest.mark.parametrize(("seed", "shape"), list(INITIAL))
def test_initial_noise_is_pcg64_float32_standard_normals_in_c_order(seed: int, shape: tuple[int, ...]) -> None:
    assert_golden(initial_noise(seed, shape), shape, INITIAL[seed, shape])


@pytest.mark.parametrize(("seed", "shape"), list(POSTERIOR))
def test_posterior_noise_is_the_same_generators_second_draw(seed: int, shape: tuple[int, ...]) -> None:
    assert_golden(posterior_noise(seed, shape), shape, POSTERIOR[seed, shape])


def test_each_image_of_a_batch_has_its_own_seeds_noise() -> None:
    batch = noise_batch([0, 42], (4,))
    np.testing.assert_allclose(batch, [INITIAL[0, (4,)][0], INITIAL[42, (2, 3)][0]], rtol=RTOL, atol=0)


def test_sdxl_initial_latents_are_the_noise_unpacked() -> None:
    """64x32 pixels: (4, 4, 8) latents per image, image i from seed 3 + i."""
    latents = sdxl.initial_latents([3, 42], height=32, width=64)
    assert latents.shape == (2, 4, 4, 8) and latents.dtype == np.float32
    np.testing.assert_allclose(latents[0, 0, 0, :8], SEED_3[:4] + SEED_3[4:], rtol=RTOL, atol=0)
    np.testing.assert_allclose(latents[1].ravel()[:4], INITIAL[42, (2, 3)][0], rtol=RTOL, atol=0)


def test_flux_initial_latents_pack_each_2x2_cell_of_the_noise_into_one_token() -> None:
    """32x32 pixels: (16, 4, 4) noise, packed as diffusers' FluxPipeline._pack_latents into 4 tokens
    of 64: token 0 holds the top-left 2x2 cell of channel 0 row by row, then channel 1's, ...; token
    1 the cell to its right."""
    latents = flux.initial_latents([3], height=32, width=32)
    assert latents.shape == (1, 4, 64) and latents.dtype == np.float32
    row_0, row_1 = SEED_3[:4], SEED_3[4:]
    np.testing.assert_allclose(latents[0, 0, :4], row_0[:2] + row_1[:2], rtol=RTOL, atol=0)
    np.testing.assert_allclose(latents[0, 1, :4], row_0[2:] + row_1[2:], rtol=RTOL, atol=0)
    # Channel 1's top-left cell (values 16, 17, 20 and 21 of the draw) follows channel 0's in token 0.
    channel_1 = (-0.68242204, -1.1730268, 0.78631794, -0.90933454)
    np.testing.assert_allclose(latents[0, 0, 4:8], channel_1, rtol=RTOL, atol=0)

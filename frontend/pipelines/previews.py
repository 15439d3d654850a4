"""Previews of a generation under way: at a few steps the denoising loop decodes its current estimate
of the clean latents (the scheduler's x0 from that step's noise prediction) with the model's VAE and
hands the images to whoever asked (a stream's partial images, api/streaming.py).

A preview reads the loop's latents and never writes them, so the final image is the same with or
without previews; its decoder call is timed on the generation's clock, so it is billed as energy.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from frontend.accounting import InferenceClock


class Previews(Protocol):
    """Where a generation's previews go."""

    @property
    def count(self) -> int:
        """How many previews to decode, spread over the steps (at most one per step run)."""

    async def show(self, images: list[npt.NDArray[np.uint8]], clock: InferenceClock) -> None:
        """One preview, an image per image of the request (uint8, height x width x 3); `clock` times
        any Triton call made for it (the safety check)."""


def preview_steps(start: int, end: int, count: int) -> frozenset[int]:
    """The steps of `range(start, end)` after whose noise prediction a preview is decoded: preview j of
    `count` at the step ceil(j * steps / (count + 1)), counted from 1, so they split the steps run
    evenly and the last step, whose estimate is the final image, gets none while there are more steps
    than previews. With `count` steps or fewer, one after each step."""
    steps = end - start
    return frozenset(start + (j * steps + count) // (count + 1) - 1 for j in range(1, count + 1))

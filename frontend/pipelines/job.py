"""What a pipeline is asked to make and what it gives back, independent of the family."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from families.family import Family


@dataclass(frozen=True)
class GenerationJob:
    """A validated request, with every default already resolved for the chosen model."""

    prompt: str
    width: int
    height: int
    steps: int
    seeds: list[int]  # one per image; image i's initial noise comes from seeds[i]
    guidance: float
    negative_prompt: str | None = None
    true_cfg_scale: float = 1.0
    """FLUX only: diffusers' `true_cfg_scale`, applied when a negative prompt is given."""
    init_images: npt.NDArray[np.float32] | None = None
    """float32 RGB in [0, 1]. img2img: shape (n, 3, height, width), one per output image, already
    resized to the job's size; output image i starts from init_images[i]. A model with
    `Limits.conditioning_sizes` (Kontext): shape (1, 3, h, w), the one image that conditions every
    output, at the conditioning size its aspect ratio picks."""
    masks: npt.NDArray[np.float32] | None = None
    """Inpainting (with `init_images`): shape (n, 1, height, width), 1 where image i is repainted and
    0 where `init_images[i]` is kept, as diffusers' mask processor gives it (pipelines/inpainting.py)."""
    strength: float = 1.0
    """img2img: the share of the schedule run from the noised input image."""
    adapters: tuple[tuple[str, float], ...] = ()
    """LoRA adapters asked for: (registered name, scale)."""
    lora: LoraFactors | None = None
    """The adapters' factors packed for the denoiser (frontend/adapters.py); None: no adapter."""
    caller: str = ""
    """Who asked (the key or account, and the end user it names): the prompt cache keeps each
    caller's prompts apart, so a cache hit's shorter time never tells one tenant another's prompt."""


@dataclass(frozen=True)
class LoraFactors:
    """One request's LoRA adapters as one row of the denoiser's flat `lora_down` and `lora_up` inputs."""

    down: npt.NDArray[np.float32]
    up: npt.NDArray[np.float32]


@dataclass(frozen=True)
class Generation:
    images: list[npt.NDArray[np.uint8]]  # height x width x 3
    compute_seconds: float  # time spent in Triton, the measured work behind energy_cost
    prompt_truncated: bool  # a text encoder read only the start of the prompt or negative prompt


@dataclass(frozen=True)
class Limits:
    """The bounds a model accepts, enforced on requests and listed by GET /v1/models."""

    sizes: tuple[str, ...]
    default_size: str
    min_side: int
    max_side: int
    side_multiple: int
    default_steps: int
    max_steps: int
    default_guidance: float
    max_guidance: float
    default_strength: float
    default_inpaint_strength: float
    parameters: frozenset[str]
    """The model-specific request parameters this model uses (e.g. "guidance", "negative_prompt")."""
    conditioning_sizes: tuple[str, ...] = ()
    """Where one input image conditions every output instead of starting one (Kontext): the trained
    resolutions it is resized to (`input_size`)."""

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """The size an input image of `width` x `height` is used at, and the output size it sets when the
        request gives none: its own rounded down to the side multiple (within the side bounds), or with
        `conditioning_sizes` the one nearest its rounded size's aspect ratio, as FluxKontextPipeline's
        `_auto_resize` picks it."""
        width, height = (max(side - side % self.side_multiple, self.side_multiple) for side in (width, height))
        if self.conditioning_sizes:
            trained = (tuple(int(side) for side in size.split("x")) for size in self.conditioning_sizes)
            _, width, height = min((abs(width / height - w / h), w, h) for w, h in trained)
        return self._bounded(width), self._bounded(height)

    def _bounded(self, side: int) -> int:
        return min(max(side - side % self.side_multiple, self.min_side), self.max_side)

    @classmethod
    def of(cls, family: Family, metadata: Mapping[str, Any], parameters: frozenset[str]) -> Limits:
        """The family's declared sizes and bounds (families/), the exported model's defaults."""
        return cls(
            sizes=family.sizes,
            default_size=family.default_size,
            min_side=family.min_side,
            max_side=family.max_side,
            side_multiple=family.side_multiple(metadata),
            default_steps=int(metadata["default_steps"]),
            max_steps=family.max_steps,
            default_guidance=float(metadata["default_guidance"]),
            max_guidance=family.max_guidance,
            default_strength=family.default_strength,
            default_inpaint_strength=family.default_inpaint_strength,
            parameters=parameters,
            conditioning_sizes=family.conditioning_sizes,
        )

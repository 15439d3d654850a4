"""What a pipeline is asked to make and what it gives back, independent of the family."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


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
    init_images: np.ndarray | None = None
    """img2img: float32 RGB in [0, 1], shape (n, 3, height, width), one per output image, already
    resized to the job's size; output image i starts from init_images[i]."""
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

    down: np.ndarray
    up: np.ndarray


@dataclass(frozen=True)
class Generation:
    images: list[np.ndarray]  # uint8, height x width x 3
    compute_seconds: float  # time spent in Triton, the measured work behind energy_cost
    prompt_truncated: bool  # a text encoder read only the start of the prompt or negative prompt


DEFAULT_SIZE = "1024x1024"
MIN_SIDE, MAX_SIDE = 128, 2048
"""Every model's image sides in pixels; TensorRT plans are built for this range (export/tensorrt.py)."""


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
    parameters: frozenset[str]
    """The model-specific request parameters this model uses (e.g. "guidance", "negative_prompt")."""

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, Any],
        *,
        sizes: tuple[str, ...],
        side_multiple: int,
        default_strength: float,
        parameters: frozenset[str],
    ) -> Limits:
        """A family's sizes and parameters, the exported model's defaults, and bounds shared by all models."""
        return cls(
            sizes=sizes,
            default_size=DEFAULT_SIZE,
            min_side=MIN_SIDE,
            max_side=MAX_SIDE,
            side_multiple=side_multiple,
            default_steps=int(metadata["default_steps"]),
            max_steps=100,
            default_guidance=float(metadata["default_guidance"]),
            max_guidance=20.0,
            default_strength=default_strength,
            parameters=parameters,
        )

"""What a pipeline is asked to make and what it gives back, independent of the family."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GenerationJob:
    """A validated request, with every default already resolved for the chosen model."""

    prompt: str
    width: int
    height: int
    steps: int
    seeds: list[int]  # one per image


@dataclass(frozen=True)
class Generation:
    images: list[np.ndarray]  # uint8, height x width x 3
    compute_seconds: float  # time spent in Triton, the measured work behind energy_cost


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

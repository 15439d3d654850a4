"""Scheduler math in numpy, mirroring diffusers' schedulers step for step (float32 throughout, as there)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

UNSUPPORTED_FLOW_MATCH_OPTIONS = (
    "shift_terminal",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "invert_sigmas",
    "stochastic_sampling",
)


@dataclass(frozen=True)
class FlowMatchEuler:
    """diffusers' `FlowMatchEulerDiscreteScheduler` as FluxPipeline drives it."""

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    time_shift_type: str = "exponential"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FlowMatchEuler:
        """Read a diffusers scheduler_config.json, refusing options whose math is not mirrored here."""
        used = [key for key in UNSUPPORTED_FLOW_MATCH_OPTIONS if config.get(key)]
        if used:
            raise ValueError(f"FlowMatchEulerDiscreteScheduler options not supported: {', '.join(used)}")
        if config.get("time_shift_type", "exponential") not in ("exponential", "linear"):
            raise ValueError(f"unknown time_shift_type {config['time_shift_type']!r}")
        fields = cls.__dataclass_fields__
        return cls(**{key: value for key, value in config.items() if key in fields})

    def schedule(self, steps: int, image_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(sigmas with the terminal 0 appended, timesteps) for `steps` steps.

        Mirrors FluxPipeline.__call__ (sigmas = linspace(1, 1/steps, steps), mu = calculate_shift)
        and FlowMatchEulerDiscreteScheduler.set_timesteps.
        """
        sigmas = np.linspace(1.0, 1 / steps, steps).astype(np.float32)
        if self.use_dynamic_shifting:
            mu = self._mu(image_seq_len)
            if self.time_shift_type == "exponential":
                sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)
            else:
                sigmas = mu / (mu + (1 / sigmas - 1) ** 1.0)
        else:
            sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        sigmas = sigmas.astype(np.float32)
        timesteps = sigmas * np.float32(self.num_train_timesteps)
        return np.append(sigmas, np.float32(0.0)), timesteps

    def _mu(self, image_seq_len: int) -> float:
        slope = (self.max_shift - self.base_shift) / (self.max_image_seq_len - self.base_image_seq_len)
        return image_seq_len * slope + self.base_shift - slope * self.base_image_seq_len

    @staticmethod
    def step(sample: np.ndarray, model_output: np.ndarray, sigma: np.float32, sigma_next: np.float32) -> np.ndarray:
        return sample + (sigma_next - sigma) * model_output

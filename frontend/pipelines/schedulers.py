"""Scheduler math in numpy, mirroring diffusers' schedulers step for step (float32 throughout, as there).

Beware numpy 1.x scalar promotion: `np.float32(x) + 1` is a float64, so constants are float32 here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class Scheduler(Protocol):
    """What the denoising loop (pipeline.py) asks of a scheduler; each family sets up its schedule."""

    def init_noise_sigma(self, sigmas: npt.NDArray[np.float32]) -> np.float32:
        """The text-to-image noise's standard deviation for the scheduled `sigmas`."""

    def add_noise(
        self, sample: npt.NDArray[np.float32], noise: npt.NDArray[np.float32], sigma: np.float32
    ) -> npt.NDArray[np.float32]:
        """img2img's start: the input image's latents noised to `sigma`."""

    def step(
        self,
        sample: npt.NDArray[np.float32],
        model_output: npt.NDArray[np.float32],
        sigma: np.float32,
        sigma_next: np.float32,
    ) -> npt.NDArray[np.float32]:
        """The latents at `sigma_next` from those at `sigma` and the guided noise prediction."""

    def denoised(
        self, sample: npt.NDArray[np.float32], model_output: npt.NDArray[np.float32], sigma: np.float32
    ) -> npt.NDArray[np.float32]:
        """The current estimate of the clean latents (x0) from those at `sigma` and the guided noise
        prediction: what a preview decodes (pipelines/previews.py)."""


ONE = np.float32(1.0)

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

    def schedule(self, steps: int, image_seq_len: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
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
    def init_noise_sigma(sigmas: npt.NDArray[np.float32]) -> np.float32:
        """FlowMatchEulerDiscreteScheduler's init_noise_sigma: flow matching starts from unit noise."""
        return ONE

    @staticmethod
    def add_noise(
        sample: npt.NDArray[np.float32], noise: npt.NDArray[np.float32], sigma: np.float32
    ) -> npt.NDArray[np.float32]:
        """FlowMatchEulerDiscreteScheduler.scale_noise: the straight path from the sample to the noise."""
        return sigma * noise + (ONE - sigma) * sample

    @staticmethod
    def step(
        sample: npt.NDArray[np.float32],
        model_output: npt.NDArray[np.float32],
        sigma: np.float32,
        sigma_next: np.float32,
    ) -> npt.NDArray[np.float32]:
        return sample + (sigma_next - sigma) * model_output

    @staticmethod
    def denoised(
        sample: npt.NDArray[np.float32], model_output: npt.NDArray[np.float32], sigma: np.float32
    ) -> npt.NDArray[np.float32]:
        """The flow's end at sigma 0: the model predicts the velocity (noise - x0)."""
        return sample - sigma * model_output


UNSUPPORTED_EULER_OPTIONS = (
    "trained_betas",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "rescale_betas_zero_snr",
)
EULER_CHOICES = {
    "beta_schedule": ("linear", "scaled_linear"),
    "prediction_type": ("epsilon", "v_prediction"),
    "timestep_spacing": ("linspace", "leading", "trailing"),
    "interpolation_type": ("linear",),
    "timestep_type": ("discrete",),
    "final_sigmas_type": ("zero",),
}
"""The values mirrored here of each EulerDiscreteScheduler option; the first is diffusers' default."""


@dataclass(frozen=True)
class EulerDiscrete:
    """diffusers' `EulerDiscreteScheduler` as the SDXL pipelines drive it (no churn: deterministic).

    Sigmas agree with diffusers to a few float32 ulps, not bit for bit: diffusers' betas come from a
    float32 `torch.linspace` whose rounding depends on the CPU's vector code, so they are computed in
    float64 here and rounded once. Everything downstream of the sigmas is exact.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"
    timestep_spacing: str = "linspace"
    steps_offset: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EulerDiscrete:
        """Read a diffusers scheduler_config.json, refusing options whose math is not mirrored here."""
        used = [key for key in UNSUPPORTED_EULER_OPTIONS if config.get(key)]
        if used:
            raise ValueError(f"EulerDiscreteScheduler options not supported: {', '.join(used)}")
        for key, choices in EULER_CHOICES.items():
            if config.get(key, choices[0]) not in choices:
                raise ValueError(f"EulerDiscreteScheduler {key}={config[key]!r} not supported (supported: {choices})")
        fields = cls.__dataclass_fields__
        return cls(**{key: value for key, value in config.items() if key in fields})

    def alphas_cumprod(self) -> npt.NDArray[np.float32]:
        """EulerDiscreteScheduler.__init__'s `alphas_cumprod`; torch accumulates the product in float64 too."""
        if self.beta_schedule == "scaled_linear":
            betas = np.linspace(self.beta_start**0.5, self.beta_end**0.5, self.num_train_timesteps) ** 2
        else:
            betas = np.linspace(self.beta_start, self.beta_end, self.num_train_timesteps)
        alphas = ONE - betas.astype(np.float32)
        return np.cumprod(alphas, dtype=np.float64).astype(np.float32)

    def schedule(self, steps: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(sigmas with the terminal 0 appended, timesteps), as EulerDiscreteScheduler.set_timesteps."""
        train_steps = self.num_train_timesteps
        # The spacings of Table 2 of https://huggingface.co/papers/2305.08891, as diffusers writes them.
        if self.timestep_spacing == "linspace":
            timesteps = np.linspace(0, train_steps - 1, steps, dtype=np.float32)[::-1].copy()
        elif self.timestep_spacing == "leading":
            ratio = train_steps // steps
            timesteps = (np.arange(0, steps) * ratio).round()[::-1].astype(np.float32) + np.float32(self.steps_offset)
        else:
            timesteps = np.arange(train_steps, 0, -train_steps / steps).round().astype(np.float32) - ONE
        alphas_cumprod = self.alphas_cumprod()
        train_sigmas = np.sqrt((ONE - alphas_cumprod) / alphas_cumprod)
        sigmas = np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
        return np.append(sigmas, 0.0).astype(np.float32), timesteps

    def init_noise_sigma(self, sigmas: npt.NDArray[np.float32]) -> np.float32:
        """The initial noise's standard deviation for the scheduled `sigmas` (diffusers' property)."""
        max_sigma: np.float32 = sigmas.max()
        if self.timestep_spacing in ("linspace", "trailing"):
            return max_sigma
        noise_sigma: np.float32 = np.sqrt(max_sigma * max_sigma + ONE)
        return noise_sigma

    @staticmethod
    def scale_model_input(sample: npt.NDArray[np.float32], sigma: np.float32) -> npt.NDArray[np.float32]:
        scaled: npt.NDArray[np.float32] = sample / np.sqrt(sigma * sigma + ONE)
        return scaled

    def step(
        self,
        sample: npt.NDArray[np.float32],
        model_output: npt.NDArray[np.float32],
        sigma: np.float32,
        sigma_next: np.float32,
    ) -> npt.NDArray[np.float32]:
        """EulerDiscreteScheduler.step with s_churn 0, so sigma_hat is sigma."""
        derivative = (sample - self.denoised(sample, model_output, sigma)) / sigma
        return sample + derivative * (sigma_next - sigma)

    def denoised(
        self, sample: npt.NDArray[np.float32], model_output: npt.NDArray[np.float32], sigma: np.float32
    ) -> npt.NDArray[np.float32]:
        """EulerDiscreteScheduler.step's `pred_original_sample`, by the prediction type."""
        if self.prediction_type == "epsilon":
            return sample - sigma * model_output
        denoised: npt.NDArray[np.float32] = model_output * (-sigma / np.sqrt(sigma * sigma + ONE)) + sample / (
            sigma * sigma + ONE
        )
        return denoised

    @staticmethod
    def add_noise(
        sample: npt.NDArray[np.float32], noise: npt.NDArray[np.float32], sigma: np.float32
    ) -> npt.NDArray[np.float32]:
        return sample + noise * sigma

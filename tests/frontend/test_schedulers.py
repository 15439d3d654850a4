"""The numpy schedulers give diffusers' sigmas and timesteps, and their Euler steps, exactly.

EulerDiscrete's sigmas are the exception, equal to a few float32 ulps (see its docstring): the
tests of its step arithmetic feed it diffusers' own sigmas and compare bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from frontend.pipelines.schedulers import EulerDiscrete, FlowMatchEuler

SCHNELL: dict[str, Any] = {"shift": 1.0, "use_dynamic_shifting": False}
DEV: dict[str, Any] = {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15}
DEV_LINEAR: dict[str, Any] = {**DEV, "time_shift_type": "linear"}
SDXL: dict[str, Any] = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "timestep_spacing": "leading",
    "steps_offset": 1,
}
SIGMA_ULPS = 1e-6  # relative: a few float32 ulps


@pytest.mark.parametrize("config", [SCHNELL, DEV, DEV_LINEAR], ids=["schnell", "dev", "dev-linear"])
@pytest.mark.parametrize("steps", [1, 4, 28])
@pytest.mark.parametrize("image_seq_len", [256, 1024, 4096])
def test_schedule_equals_diffusers(config: dict[str, Any], steps: int, image_seq_len: int) -> None:
    reference = FlowMatchEulerDiscreteScheduler(**config)
    mu = calculate_shift(image_seq_len)
    reference.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    sigmas, timesteps = FlowMatchEuler.from_config(reference.config).schedule(steps, image_seq_len)
    np.testing.assert_array_equal(sigmas, reference.sigmas.numpy())
    np.testing.assert_array_equal(timesteps, reference.timesteps.numpy())


def test_step_equals_diffusers() -> None:
    reference = FlowMatchEulerDiscreteScheduler(**DEV)
    reference.set_timesteps(sigmas=np.linspace(1.0, 1 / 4, 4), mu=calculate_shift(1024))
    sigmas, _ = FlowMatchEuler.from_config(reference.config).schedule(4, 1024)
    generator = np.random.default_rng(0)
    sample, output = (generator.standard_normal((2, 16, 64), dtype=np.float32) for _ in range(2))
    expected = reference.step(torch.from_numpy(output), reference.timesteps[0], torch.from_numpy(sample)).prev_sample
    np.testing.assert_array_equal(FlowMatchEuler.step(sample, output, sigmas[0], sigmas[1]), expected.numpy())


def test_unsupported_scheduler_options_are_refused() -> None:
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        FlowMatchEuler.from_config({**SCHNELL, "use_karras_sigmas": True})


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
@pytest.mark.parametrize("beta_schedule", ["scaled_linear", "linear"])
@pytest.mark.parametrize("steps", [1, 4, 7, 30, 50])
def test_euler_schedule_equals_diffusers(spacing: str, beta_schedule: str, steps: int) -> None:
    reference = EulerDiscreteScheduler(**{**SDXL, "timestep_spacing": spacing, "beta_schedule": beta_schedule})
    reference.set_timesteps(steps)
    scheduler = EulerDiscrete.from_config(reference.config)
    sigmas, timesteps = scheduler.schedule(steps)
    np.testing.assert_array_equal(timesteps, reference.timesteps.numpy())
    np.testing.assert_allclose(sigmas, reference.sigmas.numpy(), rtol=SIGMA_ULPS, atol=0)
    np.testing.assert_allclose(scheduler.init_noise_sigma(sigmas), reference.init_noise_sigma, rtol=SIGMA_ULPS)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_euler_loop_equals_diffusers(prediction_type: str) -> None:
    """scale_model_input and step over a whole schedule, as StableDiffusionXLPipeline's loop calls them."""
    reference = EulerDiscreteScheduler(**SDXL, prediction_type=prediction_type)
    reference.set_timesteps(4)
    reference.set_begin_index(0)
    scheduler = EulerDiscrete.from_config(reference.config)
    sigmas = reference.sigmas.numpy()
    generator = np.random.default_rng(0)
    sample = generator.standard_normal((2, 4, 8, 8), dtype=np.float32)
    expected = torch.from_numpy(sample)
    for index, timestep in enumerate(reference.timesteps):
        scaled = reference.scale_model_input(expected, timestep)
        np.testing.assert_array_equal(EulerDiscrete.scale_model_input(sample, sigmas[index]), scaled.numpy())
        output = generator.standard_normal(sample.shape, dtype=np.float32)
        expected = reference.step(torch.from_numpy(output), timestep, expected).prev_sample
        sample = scheduler.step(sample, output, sigmas[index], sigmas[index + 1])
        np.testing.assert_array_equal(sample, expected.numpy())


def test_euler_add_noise_equals_diffusers_img2img() -> None:
    """StableDiffusionXLImg2ImgPipeline noises the image latents at its first kept step (its begin index)."""
    reference = EulerDiscreteScheduler(**SDXL)
    reference.set_timesteps(10)
    reference.set_begin_index(3)
    generator = np.random.default_rng(1)
    latents, noise = (generator.standard_normal((2, 4, 8, 8), dtype=np.float32) for _ in range(2))
    expected = reference.add_noise(torch.from_numpy(latents), torch.from_numpy(noise), reference.timesteps[3:4])
    actual = EulerDiscrete.add_noise(latents, noise, reference.sigmas.numpy()[3])
    np.testing.assert_array_equal(actual, expected.numpy())


@pytest.mark.parametrize(
    "option",
    [{"use_karras_sigmas": True}, {"interpolation_type": "log_linear"}, {"prediction_type": "sample"}],
    ids=["karras", "log-linear", "sample-prediction"],
)
def test_unsupported_euler_options_are_refused(option: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        EulerDiscrete.from_config({**SDXL, **option})


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_euler_denoised_is_diffusers_pred_original_sample(prediction_type: str) -> None:
    """A stream's preview decodes this estimate of the clean latents (pipelines/previews.py)."""
    reference = EulerDiscreteScheduler(**SDXL, prediction_type=prediction_type)
    reference.set_timesteps(4)
    reference.set_begin_index(1)
    generator = np.random.default_rng(2)
    sample, output = (generator.standard_normal((2, 4, 8, 8), dtype=np.float32) for _ in range(2))
    step = reference.step(torch.from_numpy(output), reference.timesteps[1], torch.from_numpy(sample))
    scheduler = EulerDiscrete.from_config(reference.config)
    denoised = scheduler.denoised(sample, output, reference.sigmas.numpy()[1])
    np.testing.assert_array_equal(denoised, step.pred_original_sample.numpy())


def test_flow_denoised_is_the_step_to_sigma_zero() -> None:
    """Flow matching's estimate of the clean latents: where a last Euler step from here would land."""
    reference = FlowMatchEulerDiscreteScheduler(**SCHNELL)
    reference.set_timesteps(sigmas=[0.75], mu=None)
    generator = np.random.default_rng(3)
    sample, output = (generator.standard_normal((2, 16, 64), dtype=np.float32) for _ in range(2))
    expected = reference.step(torch.from_numpy(output), reference.timesteps[0], torch.from_numpy(sample)).prev_sample
    np.testing.assert_array_equal(FlowMatchEuler.denoised(sample, output, np.float32(0.75)), expected.numpy())

"""The numpy scheduler gives diffusers' sigmas and timesteps exactly, and its Euler step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from frontend.pipelines.schedulers import FlowMatchEuler

SCHNELL: dict[str, Any] = {"shift": 1.0, "use_dynamic_shifting": False}
DEV: dict[str, Any] = {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15}
DEV_LINEAR: dict[str, Any] = {**DEV, "time_shift_type": "linear"}


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

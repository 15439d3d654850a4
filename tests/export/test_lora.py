"""The denoiser's LoRA branches against diffusers' PEFT adapters, and the adapter file reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from export import flux
from export.lora import build_tiny_lora
from frontend.adapters import AdapterRefused, LoraLayout, pack, parse_adapter, read_safetensors


def test_rows_with_different_adapters_match_diffusers_set_adapters_in_one_batch(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from diffusers import FluxPipeline

    checkpoint = checkpoints["flux-dev"]
    first = build_tiny_lora(checkpoint, tmp_path / "first", seed=1, rank=4, alpha=8.0)
    second = build_tiny_lora(checkpoint, tmp_path / "second", seed=2, rank=4, targets=("to_q", "to_add_out"))
    modules = flux.load_modules(checkpoint)
    _, metadata = flux.describe(modules)
    layout = LoraLayout.from_metadata(metadata["lora"])
    packed = pack(
        [(parse_adapter(first.read_bytes(), layout), 0.7), (parse_adapter(second.read_bytes(), layout), -1.3)], layout
    )
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(2, 64, 64, generator=generator),
        "encoder_hidden_states": torch.randn(2, 16, 32, generator=generator),
        "pooled_projections": torch.randn(2, 32, generator=generator),
        "timestep": torch.full((2, 1), 0.5),
        "img_ids": torch.zeros(2, 64, 3),
        "guidance": torch.full((2, 1), 3.5),
    }
    lora = {
        "lora_down": torch.from_numpy(np.stack([packed.down, np.zeros_like(packed.down)])),
        "lora_up": torch.from_numpy(np.stack([packed.up, np.zeros_like(packed.up)])),
    }
    with torch.no_grad():
        served = modules["transformer"](**inputs, **lora).numpy()

    pipeline = FluxPipeline.from_pretrained(checkpoint)
    pipeline.load_lora_weights(first, adapter_name="first")
    pipeline.load_lora_weights(second, adapter_name="second")
    pipeline.set_adapters(["first", "second"], adapter_weights=[0.7, -1.3])
    reference = flux.FluxDenoiser(pipeline.transformer)
    with torch.no_grad():
        adapted = reference(**{name: tensor[:1] for name, tensor in inputs.items()}).numpy()
        pipeline.disable_lora()
        plain = reference(**{name: tensor[1:] for name, tensor in inputs.items()}).numpy()
    assert np.abs(served[0] - adapted[0]).max() < 1e-4
    assert np.abs(served[1] - plain[0]).max() < 1e-4
    assert np.abs(adapted - plain).max() > 0.1


def test_bfloat16_adapters_read_as_their_float32_values(tmp_path: Path) -> None:
    tensor = torch.randn(4, 8, dtype=torch.bfloat16)
    save_file({"unet.x.lora_A.weight": tensor}, tmp_path / "bf16.safetensors")
    tensors, _ = read_safetensors((tmp_path / "bf16.safetensors").read_bytes())
    assert np.array_equal(tensors["unet.x.lora_A.weight"], tensor.float().numpy())


@pytest.mark.parametrize("data", [b"", b"\xff" * 8 + b"{}", b"\x02\x00\x00\x00\x00\x00\x00\x00[]"])
def test_files_that_are_not_safetensors_are_refused(data: bytes) -> None:
    with pytest.raises(AdapterRefused, match="not a safetensors file"):
        read_safetensors(data)

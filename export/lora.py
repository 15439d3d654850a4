"""LoRA: low-rank branches in the exported denoiser, and tiny PEFT adapters for the tests.

The denoiser is exported with a branch `up @ (down @ x)` beside every LoRA-able Linear layer
(`TARGETS`: the attention projections that diffusers' LoRA training scripts and most published FLUX
and SDXL LoRAs adapt). The factors are inputs with a batch axis, so every row of a batch brings its
own adapters (several concatenated along the rank, scales folded into `up`, zeros for none) and
Triton batches requests with different adapters, or none, into one execution.

All layers' factors travel flat in two inputs, `lora_down` (B, sum R * in) and `lora_up`
(B, sum out * R), laid out in the order of the exported layer list (the pipeline metadata's
`lora.layers`): a real FLUX transformer has 266 such layers, and two inputs keep its Triton config
as short as the tiny model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from export.components import BATCH, TensorSpec

TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
"""Linear layers of attention blocks that get a branch (FLUX: the joint blocks' image and text
projections, the single blocks' q/k/v; SDXL: attn1 and attn2 of every transformer block)."""
DEFAULT_RANK = 16
"""The rank budget of a request: the sum of its adapters' ranks (e.g. two rank-8 adapters)."""


@dataclass(frozen=True)
class LoraLayer:
    name: str  # the Linear's module path in the denoiser, as diffusers' LoRA files name it
    in_features: int
    out_features: int


def lora_layers(model: torch.nn.Module) -> list[LoraLayer]:
    """The model's Linear layers named by TARGETS, in module order."""
    return [
        LoraLayer(name, module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.endswith(tuple(f".{target}" for target in TARGETS))
    ]


class LowRankFactors:
    """Each layer's (down, up) factors of the forward pass being run, cut from the flat inputs."""

    def __init__(self, layers: list[LoraLayer], rank: int) -> None:
        self.layers = layers
        self.rank = rank
        self.current: list[tuple[torch.Tensor, torch.Tensor]] = []

    def sizes(self) -> tuple[int, int]:
        """Per-sample lengths of the flat `lora_down` and `lora_up` inputs."""
        return (
            sum(self.rank * layer.in_features for layer in self.layers),
            sum(layer.out_features * self.rank for layer in self.layers),
        )

    def load(self, down: torch.Tensor | None, up: torch.Tensor | None) -> None:
        """Cut a forward pass's flat `lora_down` and `lora_up` (optional in the wrappers' signatures,
        which serve denoisers exported without branches too) into each layer's factors."""
        if down is None or up is None:
            raise ValueError("a denoiser exported with LoRA branches takes lora_down and lora_up")
        batch = down.shape[0]
        self.current = []
        down_at = up_at = 0
        for layer in self.layers:
            down_size, up_size = self.rank * layer.in_features, layer.out_features * self.rank
            self.current.append(
                (
                    down[:, down_at : down_at + down_size].reshape(batch, self.rank, layer.in_features),
                    up[:, up_at : up_at + up_size].reshape(batch, layer.out_features, self.rank),
                )
            )
            down_at, up_at = down_at + down_size, up_at + up_size


class LowRankLinear(torch.nn.Module):
    """`base(x) + up (down x)` per sample: x (B, T, in), down (B, R, in), up (B, out, R)."""

    def __init__(self, base: torch.nn.Module, factors: LowRankFactors, index: int) -> None:
        super().__init__()
        self.base = base
        self.factors = factors
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down, up = self.factors.current[self.index]
        base: torch.Tensor = self.base(x)
        return base + torch.matmul(torch.matmul(x, down.transpose(1, 2)), up.transpose(1, 2))


def add_low_rank_branches(model: torch.nn.Module, rank: int) -> LowRankFactors:
    """Replace every LoRA-able Linear of `model` by a LowRankLinear reading `rank`-wide factors."""
    factors = LowRankFactors(lora_layers(model), rank)
    for index, layer in enumerate(factors.layers):
        model.set_submodule(layer.name, LowRankLinear(model.get_submodule(layer.name), factors, index))
    return factors


def lora_inputs(factors: LowRankFactors) -> tuple[TensorSpec, TensorSpec]:
    down, up = factors.sizes()
    return TensorSpec("lora_down", "FP32", (BATCH, down)), TensorSpec("lora_up", "FP32", (BATCH, up))


def lora_metadata(factors: LowRankFactors, denoiser: str) -> dict[str, Any]:
    """What the frontend needs to read an adapter file (`denoiser`: the prefix of its tensor names)
    and pack it into the flat inputs."""
    return {
        "denoiser": denoiser,
        "rank": factors.rank,
        "layers": [[layer.name, layer.in_features, layer.out_features] for layer in factors.layers],
    }


def build_tiny_lora(
    checkpoint: Path,
    out: Path,
    seed: int = 0,
    rank: int = 4,
    alpha: float | None = None,
    targets: tuple[str, ...] = TARGETS,
) -> Path:
    """A LoRA adapter for a tiny checkpoint's denoiser, made with PEFT and saved by the pipeline's
    `save_lora_weights`, in the format `load_lora_weights` reads; returns the .safetensors file.

    PEFT starts `lora_B` at zero (an adapter that changes nothing); both factors are drawn from a
    seeded normal distribution instead, scaled so that the adapter visibly changes the image.
    """
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from export.checkpoint import read_model_index
    from families import checkpoint_family

    family = checkpoint_family(read_model_index(checkpoint)["_class_name"])
    denoiser = family.denoiser.name
    source = family.exporter_module().SOURCES[denoiser]
    model = source.model_class.from_pretrained(checkpoint, subfolder=source.subfolder, torch_dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha or rank,  # type: ignore[arg-type]  # PEFT annotates int; it scales by alpha / r, any number
        target_modules=list(targets),
        init_lora_weights=True,
    )
    model.add_adapter(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[1] ** 0.5)
    layers = get_peft_model_state_dict(model)
    metadata = {"r": rank, "lora_alpha": alpha or rank, "target_modules": list(targets)}
    out.mkdir(parents=True, exist_ok=True)
    # diffusers names the arguments after the denoiser (`transformer_lora_layers`, `unet_lora_layers`).
    save = getattr(diffusers, family.checkpoint_class).save_lora_weights
    save(out, **{f"{denoiser}_lora_layers": layers, f"{denoiser}_lora_adapter_metadata": metadata})
    return out / "pytorch_lora_weights.safetensors"

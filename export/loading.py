"""Load a checkpoint's components one at a time, in the export dtype, or as shapes alone.

`imagegen export` describes every component first from modules on torch's meta device (configs and
layer shapes, no weight memory), then loads, exports and frees one component at a time: a real FLUX
checkpoint holds 17 B parameters, and no export host should need them all in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import ModelMixin

from export.single_file import SingleFile
from export.tensorrt import Precision

TORCH_DTYPES: dict[Precision, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
Wrapper = TypeVar("Wrapper", bound=torch.nn.Module)


@dataclass(frozen=True)
class Source:
    """Where a component's module comes from: its checkpoint subfolder, its diffusers or transformers
    class, and the wrapper that gives it the Triton signature (called with the LoRA rank budget)."""

    subfolder: str
    model_class: type[Any]
    wrap: Callable[[Any, int], torch.nn.Module]


def load_model(
    model_class: type[Any],
    checkpoint: Path,
    subfolder: str,
    dtype: torch.dtype,
    weights: bool,
    single_file: SingleFile | None = None,
) -> Any:
    """The model in `dtype` (loaded so, never through an FP32 copy), or without weights on the meta
    device; its weights from `single_file` where that holds them. diffusers names the dtype argument
    `torch_dtype`, transformers 5 `dtype`."""
    diffusers_model = issubclass(model_class, ModelMixin)
    if weights and single_file is not None and single_file.holds(subfolder):
        return single_file.load(model_class, subfolder, dtype)
    if weights:
        dtype_argument = {"torch_dtype" if diffusers_model else "dtype": dtype}
        return model_class.from_pretrained(checkpoint, subfolder=subfolder, **dtype_argument)
    with torch.device("meta"):
        if diffusers_model:
            return model_class.from_config(model_class.load_config(checkpoint, subfolder=subfolder)).to(dtype)
        return model_class(model_class.config_class.from_pretrained(checkpoint, subfolder=subfolder)).to(dtype)


def load_module(
    sources: Mapping[str, Source],
    name: str,
    checkpoint: Path,
    lora_rank: int,
    dtype: torch.dtype = torch.float32,
    weights: bool = True,
    single_file: SingleFile | None = None,
) -> torch.nn.Module:
    """Component `name`, wrapped for export."""
    source = sources[name]
    model = load_model(source.model_class, checkpoint, source.subfolder, dtype, weights, single_file)
    return source.wrap(model, lora_rank).eval()


def load_modules(
    sources: Mapping[str, Source], checkpoint: Path, lora_rank: int, weights: bool = True
) -> dict[str, torch.nn.Module]:
    """Every component, in FP32 (what a family's `describe` reads; with weights, what tests compare)."""
    return {name: load_module(sources, name, checkpoint, lora_rank, weights=weights) for name in sources}


def loaded(modules: Mapping[str, torch.nn.Module], name: str, wrapper: type[Wrapper]) -> Wrapper:
    """`modules[name]` as the wrapper its Source builds, for a family's `describe` to read typed."""
    module = modules[name]
    if not isinstance(module, wrapper):
        raise TypeError(f"component {name} is a {type(module).__name__}, not a {wrapper.__name__}")
    return module

"""Each exported component described once, as data.

The ONNX export (dynamic axes, sample inputs), the Triton `config.pbtxt` and, later, TensorRT
optimisation profiles are all derived from these descriptions, so a tensor's name, type and
shape are written in exactly one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DType = Literal["FP32", "UINT8", "INT64", "STRING", "BOOL"]

BATCH = "batch"
"""The symbolic dimension Triton batches over; it is left out of `config.pbtxt` dims."""

Dim = int | str
"""A fixed size, or the name of a dynamic axis (the same name means the same size everywhere)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: DType
    dims: tuple[Dim, ...]  # including the leading BATCH axis

    def triton_dims(self) -> list[int]:
        """Per-sample dims as Triton wants them: the batch axis dropped, dynamic axes as -1."""
        return [d if isinstance(d, int) else -1 for d in self.dims[1:]]

    def sample_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else sizes[d] for d in self.dims)


@dataclass(frozen=True)
class Component:
    """One Triton model of a pipeline: its subfolder in the checkpoint and its tensor contract."""

    name: str  # the Triton model is "<pipeline>_<name>"
    subfolder: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sample_sizes: Mapping[str, int] = field(default_factory=dict)
    """Sizes of the dynamic axes for the export trace: batch 2, never 1, since a batch of 1 gets
    specialised into the graph and other batch sizes then fail in a Reshape."""
    max_batch_size: int = 16
    dynamic_batching: bool = True
    overflows_fp16: bool = False
    """Its activations pass FP16's 65,504 (FLUX's transformer, T5, SDXL's VAE): `--dtype fp16` keeps
    it in FP32, where bf16 (FP32's range) serves it at half the size."""

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Input name -> {axis: dynamic axis name}, shared names meaning equal sizes."""
        return {t.name: {i: d for i, d in enumerate(t.dims) if isinstance(d, str)} for t in self.inputs}

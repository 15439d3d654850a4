"""Export one component's torch module to ONNX, shaped by its `Component` description."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from export.attention import fused_attention_translation
from export.components import Component, TensorSpec

log = logging.getLogger(__name__)

PROTOBUF_LIMIT_BYTES = 2 * 1024**3
"""A single ONNX protobuf cannot exceed 2 GB: larger models (a real FLUX transformer) keep their
weights in an external data file next to `model.onnx`."""


def sample_inputs(component: Component) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {t.name: _sample_tensor(t, component, generator) for t in component.inputs}


def _sample_tensor(spec: TensorSpec, component: Component, generator: torch.Generator) -> torch.Tensor:
    shape = spec.sample_shape(component.sample_sizes)
    if spec.dtype == "INT64":
        return torch.zeros(shape, dtype=torch.int64)
    if spec.dtype == "UINT8":
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return torch.rand(shape, generator=generator, dtype=torch.float32)


def export_onnx(module: torch.nn.Module, component: Component, path: Path, fused_attention: bool = True) -> float:
    """Write `path` (and its external data when large); return the max |torch - onnxruntime| over the
    outputs on the sample inputs. `fused_attention`: ONNX Runtime's fused attention op (attention.py),
    else standard ONNX only, as TensorRT needs."""
    module = module.eval()
    inputs = sample_inputs(component)
    axes = {name: torch.export.Dim(name, min=1) for name in _axis_names(component)}
    dynamic_shapes = {
        name: {axis: axes[axis_name] for axis, axis_name in mapping.items()}
        for name, mapping in component.dynamic_axes().items()
    }
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        expected = module(**inputs)
        torch.onnx.export(
            module,
            (),
            str(path),
            kwargs=inputs,
            input_names=[t.name for t in component.inputs],
            output_names=[t.name for t in component.outputs],
            dynamic_shapes=dynamic_shapes,
            external_data=weight_bytes > PROTOBUF_LIMIT_BYTES,
            dynamo=True,
            custom_translation_table=fused_attention_translation() if fused_attention else None,
            verbose=False,
        )
    expected = (expected,) if isinstance(expected, torch.Tensor) else expected
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {name: t.numpy() for name, t in inputs.items()})
    # In float64: a uint8 difference would wrap around.
    error = max(
        float(np.abs(a.astype(np.float64) - e.numpy().astype(np.float64)).max())
        for a, e in zip(actual, expected, strict=True)
    )
    log.info(
        "exported %s (%.1f MB) in %.1f s, max |torch - onnx| = %.2e",
        component.name,
        weight_bytes / 1e6,
        time.perf_counter() - started,
        error,
    )
    return error


def _axis_names(component: Component) -> set[str]:
    return {name for mapping in component.dynamic_axes().values() for name in mapping.values()}

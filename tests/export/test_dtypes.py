"""`imagegen export --dtype`: half-precision ONNX weights behind an FP32 graph boundary, checked against
torch in the same dtype on the tiny models, at other batch sizes and lengths than the trace's.

Components that overflow FP16 stay FP32 under fp16 (within 1e-4 of torch: FP32's reassociation).
Tolerances, as fractions of the largest |output| of torch (pixels: of 255). fp16, run by ONNX Runtime's
CPU kernels (which accumulate in FP32, as torch does): every element within 1 %. bf16, which ONNX
Runtime has no CPU kernels for, is run by ONNX's reference evaluator, whose numpy kernels round every
step to bf16's 8-bit mantissa, sums included: the mean difference within 5 % and every element within
50 % (a wrong graph is off by the output's whole scale).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from export import flux, sdxl
from export.components import Component
from export.loading import TORCH_DTYPES, load_module
from export.onnx import at_float32_boundary, export_component, run_onnx
from export.tensorrt import Precision

TOLERANCE: dict[Precision, tuple[float, float]] = {"fp16": (0.01, 0.01), "bf16": (0.05, 0.5)}
"""dtype -> (mean, max) |torch - ONNX| as a fraction of the output's scale."""
ONNX_DTYPES = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}
FAMILIES = {"flux-schnell": flux, "sdxl": sdxl}
CASES = [
    *(("flux-schnell", name) for name in flux.SOURCES),
    # SDXL's own wrappers: the UNet, bigG's hidden states and projected pooled output.
    ("sdxl", "unet"),
    ("sdxl", "text_encoder_2"),
]
LORA_RANK = 4


@pytest.fixture(scope="module")
def components(checkpoints: dict[str, Path]) -> dict[tuple[str, str], Component]:
    described = {}
    for pipeline, module in FAMILIES.items():
        found, _ = module.describe(module.load_modules(checkpoints[pipeline], LORA_RANK, weights=False))
        described.update({(pipeline, component.name): component for component in found})
    return described


def other_sizes(component: Component) -> dict[str, torch.Tensor]:
    """Inputs at batch 3 and other lengths than the trace's (batch 2): the graph must not have fixed them."""
    sizes = {axis: size + (1 if axis == "batch" else 8) for axis, size in component.sample_sizes.items()}
    sizes = {axis: (min(size, 77) if "clip" in axis else size) for axis, size in sizes.items()}
    generator = torch.Generator().manual_seed(1)
    inputs = {}
    for spec in component.inputs:
        shape = spec.sample_shape(sizes)
        if spec.dtype == "INT64":
            inputs[spec.name] = torch.randint(0, 50, shape, generator=generator)
        else:
            inputs[spec.name] = torch.rand(shape, generator=generator)
    return inputs


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize(("pipeline", "name"), CASES)
def test_half_precision_graph_matches_torch_in_that_dtype(
    checkpoints: dict[str, Path],
    components: dict[tuple[str, str], Component],
    tmp_path: Path,
    pipeline: str,
    name: str,
    dtype: Precision,
) -> None:
    module: Any = FAMILIES[pipeline]
    component = components[(pipeline, name)]
    load = functools.partial(load_module, module.SOURCES, name, checkpoints[pipeline], LORA_RANK, TORCH_DTYPES[dtype])
    path = tmp_path / "model.onnx"
    report = export_component(load, component, path, dtype)

    kept_fp32 = dtype == "fp16" and component.overflows_fp16
    assert report.dtype == ("fp32" if kept_fp32 else dtype)
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    # The weights: constants the model computes in FP32 on purpose (RoPE frequencies, pixel scaling) may stay.
    floats = [tensor for tensor in graph.initializer if tensor.data_type in ONNX_DTYPES.values()]
    in_dtype = sum(np.prod(t.dims) for t in floats if t.data_type == ONNX_DTYPES[report.dtype])
    assert in_dtype >= 0.99 * sum(np.prod(t.dims) for t in floats)
    # The boundary Triton's configs and the frontend know: FP32 (uint8 pixels, int64 ids) whatever the weights.
    boundary = {tensor.name: tensor.type.tensor_type.elem_type for tensor in [*graph.input, *graph.output]}
    expected_boundary = {spec.name: spec.dtype for spec in [*component.inputs, *component.outputs]}
    assert boundary == {
        name: getattr(onnx.TensorProto, "FLOAT" if kind == "FP32" else kind) for name, kind in expected_boundary.items()
    }

    inputs = other_sizes(component)
    reference = at_float32_boundary(load(), TORCH_DTYPES[report.dtype])
    with torch.no_grad():
        expected = reference(**inputs)
    expected = (expected,) if isinstance(expected, torch.Tensor) else expected
    actual = run_onnx(path, {key: value.numpy() for key, value in inputs.items()})
    assert actual is not None
    mean_tolerance, max_tolerance = (1e-4, 1e-4) if kept_fp32 else TOLERANCE[dtype]
    for got, want in zip(actual, expected, strict=True):
        want = want.numpy().astype(np.float64)
        scale = 255.0 if got.dtype == np.uint8 else max(1.0, float(np.abs(want).max()))
        rounding = 1 if got.dtype == np.uint8 else 0  # a pixel may round to its neighbour
        error = np.abs(got.astype(np.float64) - want)
        assert got.shape == want.shape
        assert float(error.mean()) <= mean_tolerance * scale + rounding
        assert float(error.max()) <= max_tolerance * scale + rounding

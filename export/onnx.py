"""Export one component's torch module to ONNX, shaped by its `Component` description."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime
import torch
from onnx.reference import ReferenceEvaluator
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as NotImplementedByOnnxRuntime
from onnxscript.rewriter._matcher import SimplePatternMatcher

from export.attention import fused_attention_translation
from export.components import Component, TensorSpec
from export.loading import TORCH_DTYPES
from export.report import ComponentReport, measured
from export.tensorrt import Precision

log = logging.getLogger(__name__)

EXTERNAL_DATA_BYTES = 64 * 2**20
"""Weights past this size go to an external data file next to `model.onnx`, written tensor by tensor:
a protobuf holds at most 2 GB (a real FLUX transformer is 48 GB), and building one in memory costs
about four copies of the weights (graph, message, serialised bytes) where the file costs none."""
RANGE_CONSTRAINTS = "pkg.torch.export.ExportedProgram.range_constraints"


BFLOAT16_OPSET = 22


REFERENCE_EVALUATOR_BYTES = 2**30
"""The largest graph checked with ONNX's reference evaluator, which runs in numpy (no BLAS for
bfloat16): minutes at this size, hours for a real FLUX transformer."""


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
    inputs = sample_inputs(component)
    expected = write_onnx(module, component, path, inputs, fused_attention)
    return max_onnx_error(path, inputs, expected)


def export_component(
    load: Callable[[], torch.nn.Module],
    component: Component,
    path: Path,
    dtype: Precision = "fp32",
    fused_attention: bool = True,
) -> ComponentReport:
    """Load, export and free one component, then check its ONNX against torch: at most the weights,
    the exporter's references to them and ONNX Runtime's copy after the weights are freed are ever in
    memory (the report's peak RSS says how much that was)."""
    dtype = "fp32" if dtype == "fp16" and component.overflows_fp16 else dtype
    # ONNX Runtime's fused attention has no bfloat16 kernel on the CPU; TensorRT fuses the standard graph.
    fused_attention = fused_attention and dtype != "bf16"
    report = ComponentReport(component.name, dtype, files=[path, path.with_name(path.name + ".data")])
    with measured(report) as progress:
        progress.set_postfix_str("loading weights")
        module = at_float32_boundary(load(), TORCH_DTYPES[dtype])
        report.parameters = sum(parameter.numel() for parameter in module.parameters())
        progress.update()
        progress.set_postfix_str("tracing and writing ONNX")
        inputs = sample_inputs(component)
        expected = write_onnx(module, component, path, inputs, fused_attention)
        del module
        release_exporter_state()
        progress.update()
        progress.set_postfix_str("checking with ONNX Runtime")
        report.max_error = max_onnx_error(path, inputs, expected)
        progress.update()
    log.info(
        "exported %s (%s, %.1f M parameters) in %.1f s, max |torch - onnx| = %.2e",
        component.name,
        dtype,
        report.parameters / 1e6,
        report.seconds,
        report.max_error,
    )
    return report


def release_exporter_state() -> None:
    """Free what the exporter keeps of the last graph. onnxscript's rewrite rules (0.7) are module-level
    objects whose matchers keep the last graph they looked at (`_graph`, `_current_node`, `_match`), and
    with it its weights: each component's weights would outlive it, one more copy in memory each."""
    for matcher in [obj for obj in gc.get_objects() if isinstance(obj, SimplePatternMatcher)]:
        matcher._init_match(verbose=0)
        matcher._graph = None  # type: ignore[assignment]  # typed as always set; None is what lets it go
    gc.collect()


def at_float32_boundary(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`module` in `dtype` behind FP32 inputs and outputs, as Triton's configs and the frontend expect:
    floating inputs are cast on the way in and floating outputs on the way out (hooks, which the
    exporter traces, keep the module's own signature); integer tensors pass as they are."""
    module = module.to(dtype)
    if dtype == torch.float32:
        return module

    def cast_inputs(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return tuple(_cast(arg, dtype) for arg in args), {name: _cast(value, dtype) for name, value in kwargs.items()}

    def cast_outputs(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if isinstance(output, tuple):
            return tuple(_cast(value, torch.float32) for value in output)
        return _cast(output, torch.float32)

    module.register_forward_pre_hook(cast_inputs, with_kwargs=True)
    module.register_forward_hook(cast_outputs, with_kwargs=True)
    return module


def _cast(value: Any, dtype: torch.dtype) -> Any:
    return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def write_onnx(
    module: torch.nn.Module,
    component: Component,
    path: Path,
    inputs: dict[str, torch.Tensor],
    fused_attention: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Trace `module` on `inputs` into `path`, weights past protobuf's limit in `model.onnx.data`
    written tensor by tensor; torch's outputs on `inputs`, to check the ONNX against."""
    module = module.eval()
    axes = {name: torch.export.Dim(name, min=1) for name in _axis_names(component)}
    dynamic_shapes = {
        name: {axis: axes[axis_name] for axis, axis_name in mapping.items()}
        for name, mapping in component.dynamic_axes().items()
    }
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        expected = module(**inputs)
        program = torch.onnx.export(
            module,
            (),
            kwargs=inputs,
            input_names=[t.name for t in component.inputs],
            output_names=[t.name for t in component.outputs],
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            custom_translation_table=fused_attention_translation() if fused_attention else None,
            opset_version=opset_version(module),
            verbose=False,
        )
    if program is None:
        raise RuntimeError(f"torch.onnx.export returned no program for {component.name}")
    # torch prints the exported program's shape ranges as a set in the order of Python's string hashing,
    # which changes with every process: without them one checkpoint exports to the same bytes each time.
    program.model.graph.metadata_props.pop(RANGE_CONSTRAINTS, None)
    program.save(str(path), external_data=weight_bytes > EXTERNAL_DATA_BYTES)
    return (expected,) if isinstance(expected, torch.Tensor) else tuple(expected)


def opset_version(module: torch.nn.Module) -> int | None:
    """The exporter's default opset (20 with torch 2.13), or 22 for bfloat16 weights: Conv and several
    other ops accept bfloat16 only from opset 22 on, and a bf16 VAE's graph is invalid before it."""
    bfloat16 = any(parameter.dtype == torch.bfloat16 for parameter in module.parameters())
    return BFLOAT16_OPSET if bfloat16 else None


def max_onnx_error(path: Path, inputs: dict[str, torch.Tensor], expected: tuple[torch.Tensor, ...]) -> float:
    """max |torch - ONNX| over the outputs (NaN where no runtime here can run the graph)."""
    actual = run_onnx(path, {name: t.numpy() for name, t in inputs.items()})
    if actual is None:
        return float("nan")
    # In float64: a uint8 difference would wrap around.
    return max(
        float(np.abs(a.astype(np.float64) - e.numpy().astype(np.float64)).max())
        for a, e in zip(actual, expected, strict=True)
    )


def run_onnx(path: Path, feeds: dict[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]] | None:
    """The graph's outputs from ONNX Runtime's CPU provider, or, for what it has no CPU kernels for
    (bfloat16), from ONNX's reference evaluator (numpy) when the weights are small enough for it to
    finish; None when neither applies."""
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except NotImplementedByOnnxRuntime as error:
        weights = path.stat().st_size + sum(data.stat().st_size for data in path.parent.glob(f"{path.name}.data"))
        if weights > REFERENCE_EVALUATOR_BYTES:
            log.warning("%s is not checked: %s", path, str(error).splitlines()[0])
            return None
        # T5's relative position buckets take log(0) = -inf for a token's own position and cast it to an
        # integer a `where` then discards, as torch does silently.
        with np.errstate(divide="ignore", invalid="ignore"):
            return list(ReferenceEvaluator(str(path)).run(None, feeds))
    return list(session.run(None, feeds))


def _axis_names(component: Component) -> set[str]:
    return {name for mapping in component.dynamic_axes().values() for name in mapping.values()}

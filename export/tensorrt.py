"""`imagegen export --engine tensorrt`: each component's ONNX built into a TensorRT plan for NVIDIA GPUs.

What to build (`plan_build`: the optimisation profile, the config.pbtxt) is derived from the
component's description (components.py) and its family's axes (families/), and is separate from
building it (`build_plan`, TensorRT's Python API, present in NVIDIA's TensorRT image only), so the
former is checked where TensorRT cannot run. ONNX Runtime (`--engine onnx`) stays the default and
the fallback: the ONNX file stays beside the plan, and its config is the same but for the platform.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tritonclient.grpc import model_config_pb2 as pb

from export.components import BATCH, Component
from families import FAMILIES
from families.family import AxisRange

log = logging.getLogger(__name__)

PLATFORM = "tensorrt_plan"
PLAN_FILE = "model.plan"
Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("bf16", "fp16", "fp32")
"""bf16 (the default) keeps FP32's range at half the memory: FLUX's transformer, T5 and SDXL's VAE
overflow FP16's (NaNs or black images); fp16 is for GPUs without bf16 (before Ampere); fp32 (TF32
on Ampere and newer) for checking a plan against the ONNX model."""


Shapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
"""An input's (min, opt, max) shapes, as `IOptimizationProfile.set_shape` takes them."""


@dataclass(frozen=True)
class PlanBuild:
    """One component's TensorRT plan: the config.pbtxt that serves it and the profile it is built for."""

    config: pb.ModelConfig
    profile: dict[str, Shapes]
    precision: Precision


def profile(component: Component, ranges: Mapping[str, AxisRange], opt_batch: int) -> dict[str, Shapes]:
    """Input name -> (min, opt, max) shapes: fixed axes as described, dynamic ones from `ranges`, the
    batch from 1 to the component's max_batch_size (what Triton's dynamic batcher may form)."""
    batch = AxisRange(1, min(opt_batch, component.max_batch_size), component.max_batch_size)
    ranges = {**ranges, BATCH: batch}
    unknown = {axis for axes in component.dynamic_axes().values() for axis in axes.values()} - set(ranges)
    if unknown:
        raise ValueError(f"{component.name}: no TensorRT profile range for the dynamic axes {sorted(unknown)}")

    def shape(dims: tuple[int | str, ...], pick: str) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else getattr(ranges[d], pick) for d in dims)

    return {t.name: (shape(t.dims, "min"), shape(t.dims, "opt"), shape(t.dims, "max")) for t in component.inputs}


def plan_build(
    onnx_config: pb.ModelConfig, component: Component, metadata: Mapping[str, Any], precision: Precision
) -> PlanBuild:
    """The plan of `component` of the pipeline `metadata` describes, served with `onnx_config`'s tensors
    and batching, its axes sized as the pipeline's family declares them (families/)."""
    config = tensorrt_config(onnx_config)
    opt_batch = max(config.dynamic_batching.preferred_batch_size, default=1)
    ranges = FAMILIES[metadata["family"]].axis_ranges(metadata)
    return PlanBuild(config, profile(component, ranges, opt_batch), precision)


def tensorrt_config(onnx_config: pb.ModelConfig) -> pb.ModelConfig:
    """The same model (name, tensors, batching, parameters) served from a plan by TensorRT's platform."""
    config = pb.ModelConfig()
    config.CopyFrom(onnx_config)
    config.ClearField("backend")
    config.platform = PLATFORM
    config.default_model_filename = PLAN_FILE
    return config


def require_tensorrt() -> None:
    """Fail before any export work where TensorRT's Python API is missing."""
    if importlib.util.find_spec("tensorrt") is None:
        raise ValueError(
            "--engine tensorrt needs TensorRT's Python package, which NVIDIA's TensorRT image has: run the "
            "compose `export` job (deploy/export.Dockerfile), or export with --engine onnx (ONNX Runtime)"
        )


def build_plan(build: PlanBuild, onnx: Path, plan: Path) -> None:
    """Build `plan` from `onnx` with TensorRT on this machine's GPU (a plan runs only on the GPU
    architecture and TensorRT version that built it)."""
    import tensorrt as trt

    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):  # from the file, so external weight data is found beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx}: {errors}")
    config = builder.create_builder_config()
    if build.precision != "fp32":
        config.set_flag(trt.BuilderFlag.BF16 if build.precision == "bf16" else trt.BuilderFlag.FP16)
    shapes = builder.create_optimization_profile()
    for name, (low, opt, high) in build.profile.items():
        shapes.set_shape(name, low, opt, high)
    config.add_optimization_profile(shapes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f"TensorRT could not build {build.config.name} (its log above says why)")
    plan.write_bytes(serialized)
    log.info("built %s (%s) in %.0f s", plan, build.precision, time.perf_counter() - started)

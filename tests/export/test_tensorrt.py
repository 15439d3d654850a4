"""What `imagegen export --engine tensorrt` would build, checked where TensorRT cannot run: each
component's optimisation profile and the config.pbtxt that serves its plan, both against the
exported ONNX graph TensorRT would parse (its inputs and outputs read with `onnx`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto
from tritonclient.grpc import model_config_pb2 as pb

from export.checkpoint import export_checkpoint, read_model_index
from export.components import BATCH, Component
from export.repository import onnx_model_config, pipeline_parameters, write_config
from export.tensorrt import PLAN_FILE, PLATFORM, PlanBuild, plan_build
from families import checkpoint_family
from families.family import MAX_SIDE, MIN_SIDE
from families.triton_models import PIPELINE_PARAMETER

PIPELINES = ("flux-schnell", "sdxl")
ONNX_TYPES = {
    TensorProto.FLOAT: pb.TYPE_FP32,
    TensorProto.FLOAT16: pb.TYPE_FP16,
    TensorProto.BFLOAT16: pb.TYPE_BF16,
    TensorProto.UINT8: pb.TYPE_UINT8,
    TensorProto.INT32: pb.TYPE_INT32,
    TensorProto.INT64: pb.TYPE_INT64,
    TensorProto.BOOL: pb.TYPE_BOOL,
    TensorProto.STRING: pb.TYPE_STRING,
}
"""ONNX element type -> Triton data type, written here rather than read from the exporter's table."""

GraphTensor = tuple[int, tuple[int | str, ...]]
"""A graph input's or output's (Triton data type, dims): a size, or the name of a dynamic axis."""


Plans = dict[str, tuple[Component, PlanBuild]]
"""Component name -> (its description, its plan build)."""


@pytest.fixture(scope="module", params=PIPELINES)
def pipeline(request: pytest.FixtureRequest, checkpoints: dict[str, Path]) -> tuple[dict[str, Any], Plans]:
    """A tiny checkpoint's metadata and its plans, as export_checkpoint derives them."""
    family = checkpoint_family(read_model_index(checkpoints[request.param])["_class_name"])
    exporter = family.exporter_module()
    components, metadata = exporter.describe(exporter.load_modules(checkpoints[request.param]))
    plans = {}
    for component in components:
        parameters = pipeline_parameters(metadata) if component.name == family.denoiser.name else None
        config = onnx_model_config(request.param, component, parameters)
        plans[component.name] = (component, plan_build(config, component, metadata, "bf16"))
    return metadata, plans


@pytest.fixture(scope="module")
def plans(pipeline: tuple[dict[str, Any], Plans]) -> Plans:
    return pipeline[1]


def graph_tensors(values: Any) -> dict[str, GraphTensor]:
    """Name -> (data type, dims) of an ONNX graph's inputs or outputs."""
    found = {}
    for value in values:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim)
        found[value.name] = (ONNX_TYPES[tensor.elem_type], dims)
    return found


@pytest.fixture(scope="module")
def graphs(plans: Plans, model_repository: Path) -> dict[str, tuple[dict[str, GraphTensor], dict[str, GraphTensor]]]:
    """Component name -> the inputs and outputs of its exported `model.onnx`, the file a plan is built from."""
    found = {}
    for name, (_, build) in plans.items():
        model = onnx.load(model_repository / build.config.name / "1" / "model.onnx", load_external_data=False)
        found[name] = (graph_tensors(model.graph.input), graph_tensors(model.graph.output))
    return found


def test_every_input_axis_has_a_range_fixed_axes_fixed(plans: Plans) -> None:
    for component, build in plans.values():
        assert list(build.profile) == [t.name for t in component.inputs]
        for spec in component.inputs:
            low, opt, high = build.profile[spec.name]
            assert len(low) == len(opt) == len(high) == len(spec.dims)
            for dim, a, b, c in zip(spec.dims, low, opt, high, strict=True):
                assert 1 <= a <= b <= c, (component.name, spec.name)
                if isinstance(dim, int):
                    assert a == b == c == dim, (component.name, spec.name)


def test_the_batch_spans_one_to_the_configs_max_batch_size(plans: Plans) -> None:
    for component, build in plans.values():
        batches = {(low[0], high[0]) for low, _, high in build.profile.values()}
        assert component.inputs[0].dims[0] == BATCH
        assert batches == {(1, build.config.max_batch_size)}


def test_tokens_are_the_tokenizers_padded_length_and_sides_the_models_limits(
    pipeline: tuple[dict[str, Any], Plans],
) -> None:
    metadata, plans = pipeline
    encoders = metadata["text_encoders"]
    _, encoder = plans["text_encoder"]
    assert {shape[1] for shape in encoder.profile["input_ids"]} == {encoders["text_encoder"]}
    _, decoder = plans["vae_decoder"]
    low, opt, high = decoder.profile["latent"]
    scale = metadata["vae_scale_factor"]
    assert (low[2:], opt[2:], high[2:]) == ((MIN_SIDE // scale,) * 2, (1024 // scale,) * 2, (MAX_SIDE // scale,) * 2)
    _, image_encoder = plans["vae_encoder"]
    assert [shape[2:] for shape in image_encoder.profile["image"]] == [(MIN_SIDE,) * 2, (1024,) * 2, (MAX_SIDE,) * 2]
    if metadata["family"] == "flux":
        _, transformer = plans["transformer"]
        tokens = [(side // scale // 2) ** 2 for side in (MIN_SIDE, 1024, MAX_SIDE)]
        assert [shape[1] for shape in transformer.profile["hidden_states"]] == tokens
        assert {shape[1] for shape in transformer.profile["encoder_hidden_states"]} == {encoders["text_encoder_2"]}


def test_the_config_serves_the_plan_with_the_onnx_graphs_tensors(
    plans: Plans, graphs: dict[str, tuple[dict[str, GraphTensor], dict[str, GraphTensor]]], tmp_path: Path
) -> None:
    """Each config.pbtxt tensor is a tensor of the ONNX graph with its type and per-sample dims
    (Triton's: the batch axis left out, a dynamic axis as -1), and the graph has no other."""
    for name, (component, build) in plans.items():
        written = write_config(tmp_path, build.config) / "config.pbtxt"
        config = text_format.Parse(written.read_text(), pb.ModelConfig())
        onnx_config = onnx_model_config(config.name.split("_", 1)[0], component)
        assert (config.platform, config.backend, config.default_model_filename) == (PLATFORM, "", PLAN_FILE)
        assert config.name == onnx_config.name and config.max_batch_size == onnx_config.max_batch_size > 0
        for served, graph in zip((config.input, config.output), graphs[name], strict=True):
            assert all(isinstance(dims[0], str) for _, dims in graph.values()), (name, "a batch axis")
            triton = {
                t: (dtype, [d if isinstance(d, int) else -1 for d in dims[1:]]) for t, (dtype, dims) in graph.items()
            }
            assert {t.name: (t.data_type, list(t.dims)) for t in served} == triton, name
        assert config.HasField("dynamic_batching")


def test_the_profile_shapes_every_graph_input_within_its_fixed_sizes(
    plans: Plans, graphs: dict[str, tuple[dict[str, GraphTensor], dict[str, GraphTensor]]]
) -> None:
    """TensorRT needs a (min, opt, max) shape for every input of the graph it parses, of the input's
    rank; a fixed graph size must be the profile's at all three corners, and inputs sharing a
    dynamic axis must span the same sizes along it."""
    for name, (_, build) in plans.items():
        inputs, _ = graphs[name]
        assert set(build.profile) == set(inputs), name
        spans: dict[str, set[tuple[int, ...]]] = {}
        for tensor, (_, dims) in inputs.items():
            corners = build.profile[tensor]
            assert all(len(corner) == len(dims) for corner in corners), (name, tensor)
            for axis, dim in enumerate(dims):
                span = tuple(corner[axis] for corner in corners)
                if isinstance(dim, int):
                    assert span == (dim, dim, dim), (name, tensor, axis)
                else:
                    spans.setdefault(dim, set()).add(span)
        assert all(len(found) == 1 for found in spans.values()), (name, spans)


def test_the_denoiser_keeps_the_pipeline_metadata(pipeline: tuple[dict[str, Any], Plans]) -> None:
    metadata, plans = pipeline
    carried = [
        json.loads(build.config.parameters[PIPELINE_PARAMETER].string_value)
        for _, build in plans.values()
        if PIPELINE_PARAMETER in build.config.parameters
    ]
    assert carried == [metadata]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_export_without_tensorrt_fails_before_any_work(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    with pytest.raises(ValueError, match="needs TensorRT's Python package"):
        export_checkpoint(checkpoints["flux-schnell"], "flux-schnell", repository, engine="tensorrt")
    assert not repository.exists()

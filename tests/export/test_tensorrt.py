"""What `imagegen export --engine tensorrt` would build, checked where TensorRT cannot run: each
component's optimisation profile and the config.pbtxt that serves its plan."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from export.checkpoint import FAMILIES, export_checkpoint, read_model_index
from export.components import BATCH, Component
from export.repository import onnx_model_config, pipeline_parameters, write_config
from export.tensorrt import PLAN_FILE, PLATFORM, PlanBuild, plan_build
from frontend.pipelines.job import MAX_SIDE, MIN_SIDE
from frontend.pipelines.triton_models import PIPELINE_PARAMETER

PIPELINES = ("flux-schnell", "sdxl")


Plans = dict[str, tuple[Component, PlanBuild]]
"""Component name -> (its description, its plan build)."""


@pytest.fixture(scope="module", params=PIPELINES)
def pipeline(request: pytest.FixtureRequest, checkpoints: dict[str, Path]) -> tuple[dict[str, Any], Plans]:
    """A tiny checkpoint's metadata and its plans, as export_checkpoint derives them."""
    family = FAMILIES[read_model_index(checkpoints[request.param])["_class_name"]]
    components, metadata = family.module.describe(family.module.load_modules(checkpoints[request.param]))
    plans = {}
    for component in components:
        parameters = pipeline_parameters(metadata) if component.name == family.denoiser else None
        config = onnx_model_config(request.param, component, parameters)
        plans[component.name] = (component, plan_build(config, component, metadata, "bf16"))
    return metadata, plans


@pytest.fixture(scope="module")
def plans(pipeline: tuple[dict[str, Any], Plans]) -> Plans:
    return pipeline[1]


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


def test_the_config_serves_the_plan_with_the_onnx_models_tensors(plans: Plans, tmp_path: Path) -> None:
    for component, build in plans.values():
        written = write_config(tmp_path, build.config) / "config.pbtxt"
        config = text_format.Parse(written.read_text(), pb.ModelConfig())
        onnx = onnx_model_config(config.name.split("_", 1)[0], component)
        assert (config.platform, config.backend, config.default_model_filename) == (PLATFORM, "", PLAN_FILE)
        assert config.name == onnx.name and config.max_batch_size == onnx.max_batch_size
        assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
            (t.name, t.data_type, list(t.dims)) for t in onnx.input
        ]
        assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
            (t.name, t.data_type, list(t.dims)) for t in onnx.output
        ]
        assert config.HasField("dynamic_batching")


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

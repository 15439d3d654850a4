"""Write the Triton model repository: one model per component, `config.pbtxt` derived from its description.

Configs are complete (inputs, outputs, batching) because Triton's auto-complete costs about a
second per model at load and cannot see through the Python-based backends used locally.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from export.components import Component, TensorSpec
from families.family import TOKENIZER
from families.triton_models import PIPELINE_PARAMETER, model_name

ONNX_BACKEND = "onnxruntime"
TOKENIZER_BACKEND = "tokenizer"
TRITON_TYPES = {
    "FP32": pb.TYPE_FP32,
    "UINT8": pb.TYPE_UINT8,
    "INT64": pb.TYPE_INT64,
    "STRING": pb.TYPE_STRING,
    "BOOL": pb.TYPE_BOOL,
}


def onnx_model_config(
    pipeline: str, component: Component, parameters: Mapping[str, str] | None = None, backend: str = ONNX_BACKEND
) -> pb.ModelConfig:
    """The component's model; `backend` another than ONNX Runtime serves the same contract from another
    file (backends/simulated: a simulated GPU's costs)."""
    config = pb.ModelConfig(
        name=model_name(pipeline, component.name),
        backend=backend,
        max_batch_size=component.max_batch_size,
    )
    if backend == ONNX_BACKEND:
        config.default_model_filename = "model.onnx"
    _add_tensors(config.input, component.inputs)
    _add_tensors(config.output, component.outputs)
    if component.dynamic_batching:
        config.dynamic_batching.SetInParent()
    _single_instance(config)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return config


def tokenizer_model_config(pipeline: str, encoders: Mapping[str, int]) -> pb.ModelConfig:
    """The tokenizer model: one prompt in, fixed-length ids out for each text encoder, and whether
    any of them cut the prompt at its limit."""
    config = pb.ModelConfig(name=model_name(pipeline, TOKENIZER.name), backend=TOKENIZER_BACKEND, max_batch_size=16)
    _add_tensors(config.input, (TensorSpec("prompt", "STRING", ("batch", 1)),))
    _add_tensors(
        config.output,
        (
            *(TensorSpec(f"{name}_input_ids", "INT64", ("batch", length)) for name, length in encoders.items()),
            TensorSpec("prompt_truncated", "BOOL", ("batch", 1)),
        ),
    )
    config.dynamic_batching.SetInParent()
    _single_instance(config)
    config.parameters["encoders"].string_value = json.dumps(list(encoders))
    return config


def pipeline_parameters(metadata: Mapping[str, Any]) -> dict[str, str]:
    return {PIPELINE_PARAMETER: json.dumps(metadata, sort_keys=True)}


def write_config(repository: Path, config: pb.ModelConfig) -> Path:
    folder: Path = repository / config.name  # protobuf's messages are untyped
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    return folder


def _add_tensors(field: Any, specs: tuple[TensorSpec, ...]) -> None:
    for spec in specs:
        field.add(name=spec.name, data_type=TRITON_TYPES[spec.dtype], dims=spec.triton_dims())


def _single_instance(config: pb.ModelConfig) -> None:
    """One instance, kind left to Triton: without it a CPU host gets two (weights loaded twice), and
    naming KIND_GPU fails where there is no GPU, while Triton picks the GPU by itself where there is."""
    config.instance_group.add(count=1)

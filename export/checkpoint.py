"""Checkpoint folder -> model repository: the one entry point of `imagegen export`."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from export.components import Component
from export.hub import resolve_checkpoint
from export.loading import TORCH_DTYPES, load_module
from export.lora import DEFAULT_RANK
from export.onnx import export_component
from export.report import ComponentReport
from export.repository import (
    onnx_model_config,
    pipeline_parameters,
    tokenizer_model_config,
    write_config,
)
from export.single_file import open_single_file
from export.tensorrt import PLAN_FILE, Precision, build_plan, plan_build, require_tensorrt
from export.tokenizer import export_tokenizer
from families import checkpoint_family
from families.family import Family

log = logging.getLogger(__name__)


def read_model_index(checkpoint: Path) -> dict[str, Any]:
    index = checkpoint / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{checkpoint} is not a diffusers checkpoint folder: no model_index.json")
    content: dict[str, Any] = json.loads(index.read_text())
    try:
        checkpoint_family(content["_class_name"])
    except ValueError as exc:
        raise ValueError(f"{checkpoint}: {exc}") from None
    return content


def pipeline_options(index: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's own config (SDXL's `force_zeros_for_empty_prompt`): the model_index.json entries
    that are neither private (`_class_name`) nor components (`[library, class]` pairs)."""
    return {key: value for key, value in index.items() if not key.startswith("_") and not isinstance(value, list)}


def write_shared_config(repository: Path, config: pb.ModelConfig, version: int) -> Path:
    """Write a model's config.pbtxt, which all its versions share: a version exported beside others
    must leave it as it is, since Triton applies one config to every version and the catalog reads
    the pipeline's metadata from it. A checkpoint that changes it is a new pipeline (`--name`)."""
    existing = repository / config.name / "config.pbtxt"
    others = [path for path in existing.parent.glob("[0-9]*") if path.name != str(version)]
    if others and existing.is_file() and existing.read_text() != text_format.MessageToString(config):
        raise ValueError(
            f"{config.name}: version {version} would change the config that versions "
            f"{', '.join(sorted(path.name for path in others))} share; export it under another --name"
        )
    return write_config(repository, config)


@dataclass(frozen=True)
class Described:
    """What `imagegen export` writes for a checkpoint, before any weight is loaded."""

    family: Family
    exporter: ModuleType
    """The family's export module (`Family.exporter`): its `SOURCES` load each component's weights."""
    components: tuple[Component, ...]
    metadata: dict[str, Any]
    """The pipeline metadata its denoiser's config carries, which the frontend's catalog reads."""


def describe_checkpoint(checkpoint: Path, lora_rank: int = DEFAULT_RANK) -> Described:
    """The checkpoint's family, its components' tensor contracts and its pipeline metadata, from
    shapes alone (meta tensors)."""
    index = read_model_index(checkpoint)
    family = checkpoint_family(index["_class_name"])
    exporter = family.exporter_module()
    components, metadata = exporter.describe(exporter.load_modules(checkpoint, lora_rank, weights=False))
    metadata.update(pipeline_options(index))
    metadata["scheduler"] = json.loads((checkpoint / "scheduler" / "scheduler_config.json").read_text())
    return Described(family, exporter, components, metadata)


def export_tokenizers(described: Described, checkpoint: Path, name: str, repository: Path, version: int) -> None:
    """The pipeline's tokenizer model: its config and, in its version folder, each text encoder's tokenizer."""
    encoders: dict[str, int] = described.metadata["text_encoders"]
    folder = write_shared_config(repository, tokenizer_model_config(name, encoders), version)
    for encoder, tokenizer in described.family.tokenizer_folders.items():
        export_tokenizer(checkpoint / tokenizer, encoders[encoder], folder / str(version) / encoder / "tokenizer.json")


def export_checkpoint(
    checkpoint: Path | str,
    name: str,
    repository: Path,
    version: int = 1,
    lora_rank: int = DEFAULT_RANK,
    engine: Literal["onnx", "tensorrt"] = "onnx",
    precision: Precision = "bf16",
    dtype: Precision = "fp32",
    config: Path | str | None = None,
) -> list[ComponentReport]:
    """Export every component of `checkpoint` (a diffusers folder, a Hub id: export/hub.py, or a single
    `.safetensors` file configured by the diffusers folder or Hub id `config`: export/single_file.py) as
    version `version` of the pipeline `name`, its denoiser with LoRA branches of rank `lora_rank`
    (export/lora.py; 0: none), its ONNX weights in `dtype` (FP32 at the graph boundary; components
    that overflow FP16 stay FP32 for fp16). `engine` tensorrt also builds each component's ONNX into
    a TensorRT plan of `precision`, which its config serves. One component's weights are in memory at
    a time; returns what each cost."""
    if engine == "tensorrt":
        require_tensorrt()
    single_file = open_single_file(checkpoint, config)
    checkpoint = single_file.config if single_file else resolve_checkpoint(checkpoint)
    started = time.perf_counter()
    described = describe_checkpoint(checkpoint, lora_rank)
    family, components, metadata = described.family, described.components, described.metadata
    steps = len(components) + 1
    reports = []
    for number, component in enumerate(components, start=1):
        log.info("[%d/%d] exporting %s", number, steps, component.name)
        if dtype == "fp16" and component.overflows_fp16:
            log.warning("%s stays FP32: its activations overflow FP16 (--dtype bf16 halves it)", component.name)
        parameters = pipeline_parameters(metadata) if component.name == family.denoiser.name else None
        config = onnx_model_config(name, component, parameters)
        plan = plan_build(config, component, metadata, precision) if engine == "tensorrt" else None
        folder = write_shared_config(repository, plan.config if plan else config, version)
        onnx_path = folder / str(version) / "model.onnx"
        load = functools.partial(
            load_module,
            described.exporter.SOURCES,
            component.name,
            checkpoint,
            lora_rank,
            TORCH_DTYPES[dtype],
            single_file=single_file,
        )
        reports.append(export_component(load, component, onnx_path, dtype, fused_attention=plan is None))
        if plan is not None:
            build_plan(plan, onnx_path, folder / str(version) / PLAN_FILE)
    log.info("[%d/%d] exporting tokenizers", steps, steps)
    export_tokenizers(described, checkpoint, name, repository, version)
    log.info("exported %s to %s (version %d) in %.0f s", name, repository, version, time.perf_counter() - started)
    return reports

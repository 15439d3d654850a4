"""Checkpoint folder -> model repository: the one entry point of `imagegen export`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from export import flux, sdxl
from export.onnx import export_onnx
from export.repository import (
    onnx_model_config,
    pipeline_parameters,
    tokenizer_model_config,
    write_config,
)
from export.tokenizer import export_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    module: ModuleType  # load_modules(checkpoint) and describe(modules)
    denoiser: str
    """The component whose config carries the pipeline metadata, where the frontend's catalog looks."""


FAMILIES: dict[str, Family] = {
    "FluxPipeline": Family(flux, "transformer"),
    "StableDiffusionXLPipeline": Family(sdxl, "unet"),
}
"""diffusers pipeline class (model_index.json `_class_name`) -> how to export it."""

TOKENIZER_FOLDERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}


def read_model_index(checkpoint: Path) -> dict[str, Any]:
    index = checkpoint / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{checkpoint} is not a diffusers checkpoint folder: no model_index.json")
    content: dict[str, Any] = json.loads(index.read_text())
    if content["_class_name"] not in FAMILIES:
        raise ValueError(f"{checkpoint}: {content['_class_name']} is not supported (supported: {', '.join(FAMILIES)})")
    return content


def pipeline_options(index: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's own config (SDXL's `force_zeros_for_empty_prompt`): the model_index.json entries
    that are neither private (`_class_name`) nor components (`[library, class]` pairs)."""
    return {key: value for key, value in index.items() if not key.startswith("_") and not isinstance(value, list)}


def export_checkpoint(checkpoint: Path, name: str, repository: Path, version: int = 1) -> None:
    """Export every component of `checkpoint` as version `version` of the pipeline `name`."""
    index = read_model_index(checkpoint)
    family = FAMILIES[index["_class_name"]]
    started = time.perf_counter()
    modules = family.module.load_modules(checkpoint)
    components, metadata = family.module.describe(modules)
    metadata.update(pipeline_options(index))
    metadata["scheduler"] = json.loads((checkpoint / "scheduler" / "scheduler_config.json").read_text())
    steps = len(components) + 1
    for number, component in enumerate(components, start=1):
        log.info("[%d/%d] exporting %s", number, steps, component.name)
        parameters = pipeline_parameters(metadata) if component.name == family.denoiser else None
        folder = write_config(repository, onnx_model_config(name, component, parameters))
        export_onnx(modules[component.name], component, folder / str(version) / "model.onnx")
    log.info("[%d/%d] exporting tokenizers", steps, steps)
    encoders: dict[str, int] = metadata["text_encoders"]
    folder = write_config(repository, tokenizer_model_config(name, encoders))
    for encoder, max_length in encoders.items():
        export_tokenizer(
            checkpoint / TOKENIZER_FOLDERS[encoder], max_length, folder / str(version) / encoder / "tokenizer.json"
        )
    log.info("exported %s to %s (version %d) in %.0f s", name, repository, version, time.perf_counter() - started)

"""Checkpoint folder -> model repository: the one entry point of `imagegen export`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import ModuleType

from export import flux
from export.onnx import export_onnx
from export.repository import (
    onnx_model_config,
    pipeline_parameters,
    tokenizer_model_config,
    write_config,
)
from export.tokenizer import export_tokenizer

log = logging.getLogger(__name__)

FAMILIES: dict[str, ModuleType] = {"FluxPipeline": flux}
"""diffusers pipeline class (model_index.json `_class_name`) -> the module that exports it."""

TOKENIZER_FOLDERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}


def detect_family(checkpoint: Path) -> ModuleType:
    index = checkpoint / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{checkpoint} is not a diffusers checkpoint folder: no model_index.json")
    class_name = json.loads(index.read_text())["_class_name"]
    if class_name not in FAMILIES:
        raise ValueError(f"{checkpoint}: {class_name} is not supported (supported: {', '.join(FAMILIES)})")
    return FAMILIES[class_name]


def export_checkpoint(checkpoint: Path, name: str, repository: Path, version: int = 1) -> None:
    """Export every component of `checkpoint` as version `version` of the pipeline `name`."""
    family = detect_family(checkpoint)
    started = time.perf_counter()
    modules = family.load_modules(checkpoint)
    components, metadata = family.describe(modules)
    metadata["scheduler"] = json.loads((checkpoint / "scheduler" / "scheduler_config.json").read_text())
    steps = len(components) + 1
    for number, component in enumerate(components, start=1):
        log.info("[%d/%d] exporting %s", number, steps, component.name)
        parameters = pipeline_parameters(metadata) if component.name == "transformer" else None
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

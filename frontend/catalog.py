"""Public model ids and aliases -> the pipelines Triton serves.

Pipelines are discovered from Triton itself: the denoiser of each exported pipeline carries the
pipeline's metadata in its config `parameters`, so deploying a model to Triton is all an operator does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from frontend.api.errors import ModelNotFound
from frontend.pipelines import flux, sdxl
from frontend.pipelines.flux import FluxPipeline
from frontend.pipelines.job import Generation, GenerationJob, Limits
from frontend.pipelines.sdxl import SDXLPipeline
from frontend.triton import TritonClient

log = logging.getLogger(__name__)

PIPELINE_PARAMETER = "imagegen.pipeline"
"""Config parameter (JSON) of a pipeline's denoiser model; the exporter writes it, the catalog reads it."""


class Pipeline(Protocol):
    """What the API asks of a family's pipeline."""

    @property
    def name(self) -> str: ...

    @property
    def limits(self) -> Limits: ...

    async def generate(self, job: GenerationJob) -> Generation: ...


FAMILIES: dict[str, tuple[str, Callable[[str, Mapping[str, Any], TritonClient], Pipeline]]] = {
    flux.FAMILY: (flux.DENOISER, FluxPipeline.from_metadata),
    sdxl.FAMILY: (sdxl.DENOISER, SDXLPipeline.from_metadata),
}
"""Metadata `family` -> (the denoiser component, whose config carries the metadata; the pipeline's builder)."""


@dataclass(frozen=True)
class Catalog:
    pipelines: Mapping[str, Pipeline]
    aliases: Mapping[str, str] = field(default_factory=dict)
    default_model: str = "dall-e-3"

    def resolve(self, model: str | None) -> Pipeline:
        requested = model or self.default_model
        name = self.aliases.get(requested, requested)
        if name not in self.pipelines:
            raise ModelNotFound(
                f"The model `{requested}` does not exist. Available: {', '.join(self.public_ids())}.", param="model"
            )
        return self.pipelines[name]

    def public_ids(self) -> list[str]:
        return sorted({*self.pipelines, *(alias for alias, name in self.aliases.items() if name in self.pipelines)})


async def discover(triton: TritonClient, aliases: Mapping[str, str], default_model: str) -> Catalog:
    """Build the catalog from the ready models in Triton."""
    pipelines: dict[str, Pipeline] = {}
    for model, config in (await triton.model_configs()).items():
        raw = config.get("parameters", {}).get(PIPELINE_PARAMETER, {}).get("string_value")
        if raw is None:
            continue
        metadata = json.loads(raw)
        family = metadata.get("family")
        if family not in FAMILIES:
            log.warning("model %s has pipeline family %r, which this frontend does not serve", model, family)
            continue
        denoiser, build = FAMILIES[family]
        name = model.removesuffix(f"_{denoiser}")
        pipelines[name] = build(name, metadata, triton)
    log.info("serving pipelines: %s", ", ".join(sorted(pipelines)) or "none")
    return Catalog(pipelines=pipelines, aliases=dict(aliases), default_model=default_model)

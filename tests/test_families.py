"""Each family's declaration (families/) against what its exporter writes: every exported component
is one rollouts load, warm up and unload, every dynamic axis has a TensorRT profile range, and the
catalog builds the family's pipeline from the exported metadata with the declared bounds."""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from export.checkpoint import describe_checkpoint, read_model_index
from export.components import Component
from export.tensorrt import profile
from families import FAMILIES, checkpoint_family
from families.family import TOKENIZER, Family
from families.triton_models import model_name
from frontend.catalog import served_pipeline
from frontend.pipelines.pipeline import DiffusionPipeline
from frontend.rollout import component_models
from frontend.triton import TritonClient
from tests.harness import TINY_MODELS
from tests.test_layers import ROOT, RuntimeImports

Exported = tuple[Family, tuple[Component, ...], dict[str, Any]]


@pytest.fixture(scope="module", params=TINY_MODELS)
def exported(request: pytest.FixtureRequest, checkpoints: dict[str, Path]) -> Exported:
    """A tiny checkpoint's family and what its exporter declares: the components and the metadata."""
    described = describe_checkpoint(checkpoints[request.param])
    return described.family, described.components, described.metadata


def served(model: str, metadata: dict[str, Any]) -> DiffusionPipeline | None:
    """The pipeline the catalog builds from a denoiser's metadata (building one calls no Triton)."""

    async def build() -> DiffusionPipeline | None:
        triton = TritonClient("127.0.0.1:9")
        try:
            return served_pipeline(model, metadata, triton)
        finally:
            await triton.close()

    return asyncio.run(build())


def test_the_declarations_import_the_standard_library_alone() -> None:
    """So export/ and frontend/ may both import them, and they neither: a declaration names its
    modules (`exporter`, `pipeline`) as strings."""
    found = []
    for path in sorted((ROOT / "families").glob("*.py")):
        visitor = RuntimeImports()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        top = {name.split(".")[0] for name in visitor.found}
        found += [f"{path.name} imports {name}" for name in top - sys.stdlib_module_names - {"__future__", "families"}]
    assert found == []


def test_every_family_has_a_tiny_checkpoint(checkpoints: dict[str, Path]) -> None:
    """So the tests below cover each declaration."""
    covered = {checkpoint_family(read_model_index(checkpoints[name])["_class_name"]).name for name in TINY_MODELS}
    assert covered == set(FAMILIES)


def test_every_exported_component_is_one_a_rollout_moves(exported: Exported) -> None:
    family, components, metadata = exported
    written = {TOKENIZER.name, *(component.name for component in components)}
    assert written == {component.name for component in family.components}
    pipeline = served(model_name("tiny", family.denoiser.name), metadata)
    assert pipeline is not None and pipeline.family is family
    in_triton = {model_name("tiny", name): {1} for name in written}
    assert sorted(component_models(pipeline, in_triton)) == sorted(in_triton)


def test_every_dynamic_axis_has_a_tensorrt_range(exported: Exported) -> None:
    family, components, metadata = exported
    ranges = family.axis_ranges(metadata)
    for component in components:
        profiled = profile(component, ranges, opt_batch=1)  # raises on an axis without a range
        assert set(profiled) == {tensor.name for tensor in component.inputs}


def test_the_metadata_names_the_family_and_its_declared_prompts(
    exported: Exported, checkpoints: dict[str, Path]
) -> None:
    family, _, metadata = exported
    assert FAMILIES[metadata["family"]] is family
    assert metadata["text_encoders"] == dict(family.served_variant(metadata).prompt_lengths)
    assert set(metadata["text_encoders"]) == set(family.tokenizer_folders)


def test_the_served_limits_are_the_declared_ones(exported: Exported) -> None:
    family, _, metadata = exported
    pipeline = served(model_name("tiny", family.denoiser.name), metadata)
    assert pipeline is not None
    variant = family.served_variant(metadata)
    limits = pipeline.limits
    assert (limits.sizes, limits.default_steps, limits.default_guidance) == (
        family.sizes,
        variant.steps,
        variant.guidance,
    )
    assert variant.parameters <= limits.parameters
    assert limits.side_multiple % (pipeline.vae_scale_factor * family.latent_packing) == 0

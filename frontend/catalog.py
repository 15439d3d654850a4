"""Public model ids, aliases and flavours -> the pipelines Triton serves.

Pipelines are discovered from Triton itself: the denoiser of each exported pipeline carries the
pipeline's metadata in its config `parameters`, so deploying a model to Triton is all an operator does.
What clients may call them is the operator's catalog file (`IMAGEGEN_CATALOG`, TOML, README
"Catalog and flavours"), re-read when it changes, without a restart:

    default_model = "dall-e-3"
    [models]                       # public id = pipeline; without this table every pipeline is public
    "flux-schnell" = "flux-schnell"
    [aliases]
    "dall-e-3" = "flux-schnell"
    [flavours."flux-schnell".eco]  # `flux-schnell:eco`
    steps = 2                      # the flavour's defaults; a request's own `steps` still wins
    [flavours."flux-dev".speed]
    pipeline = "flux-schnell"      # or another pipeline entirely

Without a file, every pipeline is public under its own name and `dall-e-3` is `flux-schnell`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from families import FAMILIES
from families.triton_models import PIPELINE_PARAMETER
from frontend.errors import ModelNotFound
from frontend.pipelines.pipeline import DiffusionPipeline
from frontend.triton import TritonClient
from frontend.triton_pool import TritonPool

log = logging.getLogger(__name__)

FLAVOURS = ("balanced", "speed", "price", "eco", "batch")
"""The spec's flavour suffixes (`MODEL:FLAVOUR`). A suffix is a flavour only when it is one of these;
any other colon stays part of the model id. One the catalog does not configure for a model serves
the model as it is."""
DEFAULT_ALIASES = {"dall-e-3": "flux-schnell"}


@dataclass(frozen=True)
class Flavour:
    """A variant of a public model: another pipeline, defaults of its own, or both."""

    pipeline: str | None = None
    """Serve this pipeline instead (a distilled or smaller export); None: the model's own."""
    steps: int | None = None
    """Default denoising steps (quality="hd" doubles it; a request's `steps` wins)."""
    guidance: float | None = None
    """Default guidance, for models that take guidance."""

    def __post_init__(self) -> None:
        checks = (
            (self.pipeline, str, "pipeline"),
            (self.steps, int, "steps"),
            (self.guidance, (int, float), "guidance"),
        )
        for value, kind, name in checks:
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise TypeError(f"`{name}` has the wrong type: {value!r}")


@dataclass(frozen=True)
class CatalogConfig:
    """The operator's catalog file, parsed and checked for shape (names are checked against Triton later)."""

    models: Mapping[str, str] | None = None
    """Public id -> pipeline; None: every discovered pipeline under its own name."""
    aliases: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    flavours: Mapping[str, Mapping[str, Flavour]] = field(default_factory=dict)
    """Public id -> flavour name -> what it serves."""
    default_model: str = "dall-e-3"

    @classmethod
    def read(cls, path: Path) -> CatalogConfig:
        """Parse the file; ValueError naming what is wrong."""
        try:
            content = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"catalog {path}: {exc}") from None
        unknown = set(content) - {"models", "aliases", "flavours", "default_model"}
        if unknown:
            raise ValueError(f"catalog {path}: unknown keys {sorted(unknown)}")
        flavours: dict[str, dict[str, Flavour]] = {}
        for model, named in _table(content.get("flavours", {}), "flavours", path).items():
            for name, settings in _table(named, f"flavours.{model}", path).items():
                if name not in FLAVOURS:
                    raise ValueError(f"catalog {path}: flavour {model}:{name} is not one of {', '.join(FLAVOURS)}")
                try:
                    flavour = Flavour(**_table(settings, f"flavours.{model}.{name}", path))
                except TypeError as exc:
                    raise ValueError(f"catalog {path}: flavour {model}:{name}: {exc}") from None
                flavours.setdefault(model, {})[name] = flavour
        models = content.get("models")
        return cls(
            models=None if models is None else _strings(_table(models, "models", path), path),
            aliases=_strings(_table(content["aliases"], "aliases", path), path)
            if "aliases" in content
            else dict(DEFAULT_ALIASES),
            flavours=flavours,
            default_model=str(content.get("default_model", cls.default_model)),
        )


def _table(value: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"catalog {path}: `{where}` must be a table")
    return value


def _strings(table: Mapping[str, Any], path: Path) -> dict[str, str]:
    if not all(isinstance(value, str) for value in table.values()):
        raise ValueError(f"catalog {path}: model and alias targets must be strings")
    return dict(table)


@dataclass(frozen=True)
class Catalog:
    pipelines: Mapping[str, DiffusionPipeline]
    """Discovered in Triton, by pipeline name."""
    versions: Mapping[str, int] = field(default_factory=dict)
    """Pipeline -> the version loaded in Triton at discovery, served until a rollout routes another."""
    config: CatalogConfig = field(default_factory=CatalogConfig)

    def resolve(self, model: str | None) -> DiffusionPipeline:
        """The pipeline a public id, alias or `MODEL:FLAVOUR` names, with the flavour's defaults applied."""
        requested = model or self.config.default_model
        base, _, suffix = requested.rpartition(":")
        if not base or suffix not in FLAVOURS:
            base, suffix = requested, ""
        public_id = self.config.aliases.get(base, base)
        pipeline = self._public_pipeline(public_id)
        flavour = self.config.flavours.get(public_id, {}).get(suffix)
        if pipeline is None or (flavour and flavour.pipeline and flavour.pipeline not in self.pipelines):
            raise ModelNotFound(
                f"The model `{requested}` does not exist. Available: {', '.join(self.public_ids())}.", param="model"
            )
        return pipeline if flavour is None else flavoured(self.pipelines[flavour.pipeline or pipeline.name], flavour)

    def _public_pipeline(self, public_id: str) -> DiffusionPipeline | None:
        models = self.config.models
        name = public_id if models is None else models.get(public_id)
        return self.pipelines.get(name) if name is not None else None

    def public_ids(self) -> list[str]:
        """Every id a client may send: models, aliases and configured flavours whose pipelines are served."""
        ids = {public_id for public_id in self.config.models or self.pipelines if self._public_pipeline(public_id)}
        ids |= {alias for alias, target in self.config.aliases.items() if target in ids}
        for public_id, named in self.config.flavours.items():
            for name, flavour in named.items():
                if public_id in ids and (flavour.pipeline is None or flavour.pipeline in self.pipelines):
                    ids.add(f"{public_id}:{name}")
        return sorted(ids)


def flavoured(pipeline: DiffusionPipeline, flavour: Flavour) -> DiffusionPipeline:
    """`pipeline` with the flavour's defaults, bounded by the pipeline's own limits."""
    limits = pipeline.limits
    changes: dict[str, Any] = {}
    if flavour.steps is not None:
        changes["default_steps"] = min(max(flavour.steps, 1), limits.max_steps)
    if flavour.guidance is not None and "guidance" in limits.parameters:
        changes["default_guidance"] = min(max(flavour.guidance, 0.0), limits.max_guidance)
    if not changes:
        return pipeline
    return dataclasses.replace(pipeline, limits=dataclasses.replace(limits, **changes))


async def discover(triton: TritonClient, config: CatalogConfig) -> Catalog:
    """Build the catalog from the ready models in Triton."""
    pipelines: dict[str, DiffusionPipeline] = {}
    versions: dict[str, int] = {}
    ready = await triton.ready_versions()
    for model, model_config in (await triton.model_configs()).items():
        raw = model_config.get("parameters", {}).get(PIPELINE_PARAMETER, {}).get("string_value")
        if raw is None:
            continue
        pipeline = served_pipeline(model, json.loads(raw), triton)
        if pipeline is not None:
            pipelines[pipeline.name] = pipeline
            versions[pipeline.name] = max(ready.get(model, {1}))
    log.info("serving pipelines: %s", ", ".join(f"{name} v{versions[name]}" for name in sorted(pipelines)) or "none")
    return Catalog(pipelines=pipelines, versions=versions, config=config)


def served_pipeline(model: str, metadata: Mapping[str, Any], triton: TritonClient) -> DiffusionPipeline | None:
    """The pipeline whose denoiser model `model` carries `metadata`, as its family declares it (families/);
    None, and a warning, for a family this frontend does not serve."""
    family = FAMILIES.get(metadata.get("family", ""))
    if family is None:
        log.warning(
            "model %s has pipeline family %r, which this frontend does not serve", model, metadata.get("family")
        )
        return None
    name = model.removesuffix(f"_{family.denoiser.name}")
    pipeline: DiffusionPipeline = family.pipeline_class().from_metadata(name, metadata, triton)
    return pipeline


class CatalogSource:
    """Where the catalog comes from: Triton's pipelines (asked of one server of the pool: they serve one
    model repository) and the operator's file, re-read when it changes."""

    def __init__(self, pool: TritonPool, path: Path | None, aliases: Mapping[str, str], default_model: str) -> None:
        self.pool = pool
        self.path = path
        self._defaults = CatalogConfig(aliases=dict(aliases), default_model=default_model)
        self._digest: bytes | None = None

    async def load(self) -> Catalog:
        """Read the file (ValueError when it does not parse) and discover the pipelines."""
        # Taken before the file is parsed: a change after this point is seen by the next `changed`.
        # A file that does not parse is read again once it changes again.
        self._digest = self._content_digest()
        config = self._defaults if self.path is None else CatalogConfig.read(self.path)
        return await discover(self.pool.pick(()).client, config)

    def changed(self) -> bool:
        return self.path is not None and self._content_digest() != self._digest

    def _content_digest(self) -> bytes | None:
        """The file's content, hashed: a modification time misses a rewrite within one timestamp tick
        (seen in CI), and the file is small enough to read at every refresh."""
        try:
            return hashlib.sha256(self.path.read_bytes()).digest() if self.path is not None else None
        except OSError:
            return None

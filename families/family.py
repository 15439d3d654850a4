"""What a model family is, as data: its components, its defaults and bounds, its TensorRT axes, and
which modules export and serve it.

The exporter (`export/`) and the frontend (`frontend/`) both read a family's declaration
(families/flux.py, families/sdxl.py), and this package imports neither of them, so a family is
written down once: `imagegen export` picks the declaration by the checkpoint's diffusers class, the
catalog by the `family` its exported metadata names, and rollouts load, warm up and unload exactly
the components it lists.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["tokenizer", "text_encoder", "denoiser", "vae_encoder", "vae_decoder"]

DEFAULT_SIZE = "1024x1024"
MIN_SIDE, MAX_SIDE = 128, 2048
"""Every family's image sides in pixels, unless its declaration says otherwise; TensorRT plans are
built for this range."""
MAX_STEPS = 100
MAX_GUIDANCE = 20.0


@dataclass(frozen=True)
class Component:
    """One Triton model of a pipeline (`<pipeline>_<name>`, families/triton_models.py)."""

    name: str
    role: Role
    tokenizer: str | None = None
    """A text encoder's tokenizer folder in the diffusers checkpoint, which the tokenizer model carries."""

    def __post_init__(self) -> None:
        if (self.role == "text_encoder") != (self.tokenizer is not None):
            raise ValueError(f"{self.name}: a text encoder, and only a text encoder, names its tokenizer folder")


TOKENIZER = Component("tokenizer", "tokenizer")
"""Every family's prompt tokenizer: one model for all its text encoders (backends/tokenizer)."""
VAE_ENCODER = Component("vae_encoder", "vae_encoder")
VAE_DECODER = Component("vae_decoder", "vae_decoder")
"""The VAE's two halves, exported alike for every family (export/vae.py)."""


@dataclass(frozen=True)
class AxisRange:
    """One dynamic axis's sizes in a TensorRT optimisation profile: TensorRT tunes kernels for `opt`."""

    min: int
    opt: int
    max: int

    @classmethod
    def fixed(cls, size: int) -> AxisRange:
        return cls(size, size, size)

    def scaled(self, divisor: int) -> AxisRange:
        return AxisRange(self.min // divisor, self.opt // divisor, self.max // divisor)

    def squared(self) -> AxisRange:
        return AxisRange(self.min**2, self.opt**2, self.max**2)


Measure = Literal["prompt", "pixels", "latents", "image_tokens"]
"""What sets an axis's size: a prompt's padded length (`encoders`), the image's sides, the latents'
sides (pixels / the VAE's scale factor), or the packed image tokens ((latent side / packing)²)."""


@dataclass(frozen=True)
class Axis:
    """A named dynamic axis of the family's tensors (the same name is the same size everywhere)."""

    name: str
    measure: Measure | AxisRange
    """What sets its size, or its own range where no measure does."""
    encoders: tuple[Component, ...] = ()
    """`prompt` axes: the text encoders whose padded length it spans (the longest of them)."""


@dataclass(frozen=True)
class Variant:
    """What differs between a family's checkpoints (FLUX.1 schnell and dev): the exporter writes the
    defaults into the pipeline's metadata, the frontend serves them."""

    name: str
    steps: int
    guidance: float
    prompt_lengths: Mapping[str, int]
    """Text encoder -> the prompt's padded length in tokens (the max sequence length)."""
    parameters: frozenset[str]
    """The request parameters the model takes beyond prompt, n and size (LoRA's are added where exported)."""
    embeds_guidance: bool = False
    """The denoiser takes guidance as an input (FLUX.1-dev), where the checkpoint's config says so."""


@dataclass(frozen=True)
class Family:
    """One model family, declared once: what `imagegen export` writes and what the frontend serves."""

    name: str
    """The `family` of the exported pipeline metadata, by which the catalog finds this declaration."""
    checkpoint_class: str
    """The diffusers pipeline class (model_index.json `_class_name`) that `imagegen export` exports as this family."""
    components: tuple[Component, ...]
    axes: tuple[Axis, ...]
    variants: tuple[Variant, ...]
    sizes: tuple[str, ...]
    """The sizes listed by GET /v1/models (any other within the bounds is served too)."""
    default_strength: float
    """img2img's default `strength` (served only where a variant's parameters take `strength`)."""
    default_inpaint_strength: float
    """A masked edit's default `strength` (where a variant's parameters take `mask_image`)."""
    exporter: str
    """The module that describes and loads its components for export (`describe`, `load_modules`, `SOURCES`)."""
    pipeline: str
    """The frontend's pipeline class, `module:Class`, which the catalog builds from the metadata."""
    latent_packing: int = 1
    """Latent cells packed per side into one denoiser token (FLUX: 2x2)."""
    conditioning_sizes: tuple[str, ...] = ()
    """Where one input image conditions every output instead of starting one (Kontext): the trained
    resolutions it is resized to, the one nearest its aspect ratio, which is the default output size too."""
    default_size: str = DEFAULT_SIZE
    min_side: int = MIN_SIDE
    max_side: int = MAX_SIDE
    max_steps: int = MAX_STEPS
    max_guidance: float = MAX_GUIDANCE

    def component(self, role: Role) -> Component:
        """The one component of `role` (the tokenizer, the denoiser, either VAE half)."""
        (found,) = (component for component in self.components if component.role == role)
        return found

    @property
    def denoiser(self) -> Component:
        """Whose config carries the pipeline's metadata (families/triton_models.py's PIPELINE_PARAMETER)."""
        return self.component("denoiser")

    @property
    def text_encoders(self) -> tuple[Component, ...]:
        return tuple(component for component in self.components if component.role == "text_encoder")

    @property
    def tokenizer_folders(self) -> dict[str, str]:
        """Text encoder -> its tokenizer's folder in the checkpoint."""
        return {encoder.name: encoder.tokenizer for encoder in self.text_encoders if encoder.tokenizer is not None}

    def variant(self, embeds_guidance: bool) -> Variant:
        """The variant of a checkpoint whose denoiser does or does not take guidance as an input."""
        (found,) = (variant for variant in self.variants if variant.embeds_guidance == embeds_guidance)
        return found

    def served_variant(self, metadata: Mapping[str, Any]) -> Variant:
        """The variant an exported pipeline's metadata describes."""
        return self.variant(bool(metadata.get("guidance_embeds", False)))

    def side_multiple(self, metadata: Mapping[str, Any]) -> int:
        """What image sides must be a multiple of: the exporter's own where the denoiser's shape sets it
        (SDXL's UNet downsamples the latents once per block), else the VAE's scale factor times the packing."""
        packed = int(metadata["vae_scale_factor"]) * self.latent_packing
        return int(metadata.get("side_multiple", packed))

    def axis_ranges(self, metadata: Mapping[str, Any]) -> dict[str, AxisRange]:
        """Axis name -> the sizes the frontend sends, for an exported pipeline's metadata: prompt axes
        at the tokenizer's padded length, image axes over the family's sides with the default size as
        `opt`."""
        lengths: Mapping[str, int] = metadata["text_encoders"]
        pixels = AxisRange(self.min_side, int(self.default_size.split("x")[0]), self.max_side)
        latents = pixels.scaled(int(metadata["vae_scale_factor"]))
        measured = {
            "pixels": pixels,
            "latents": latents,
            "image_tokens": latents.scaled(self.latent_packing).squared(),
        }
        ranges = {}
        for axis in self.axes:
            if isinstance(axis.measure, AxisRange):
                ranges[axis.name] = axis.measure
            elif axis.measure == "prompt":
                ranges[axis.name] = AxisRange.fixed(max(lengths[encoder.name] for encoder in axis.encoders))
            else:
                ranges[axis.name] = measured[axis.measure]
        return ranges

    def pipeline_class(self) -> Any:
        """The frontend's pipeline class (imported here by name: this package imports neither side)."""
        module, _, name = self.pipeline.partition(":")
        return getattr(importlib.import_module(module), name)

    def exporter_module(self) -> Any:
        return importlib.import_module(self.exporter)


VAE_AXES = (
    Axis("height", "pixels"),
    Axis("width", "pixels"),
    Axis("latent_height", "latents"),
    Axis("latent_width", "latents"),
)
"""The VAE's axes (export/vae.py), which every family's denoiser that works on latent grids shares."""

"""What every family's pipeline shares: the fields the API reads, its Triton models' names, and prompt
encoding through the prompt cache. Each family (flux.py, sdxl.py) adds its scheduler, its stages and
its denoising loop, mirroring its diffusers pipeline."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from families.family import Family
from families.triton_models import model_name
from frontend.accounting import InferenceClock
from frontend.adapters import LORA_PARAMETERS, LoraLayout
from frontend.pipelines.job import Generation, GenerationJob, Limits
from frontend.pipelines.prompt_cache import Encoded, PromptCache
from frontend.progress import Progress
from frontend.triton import TritonClient


@dataclass(frozen=True, kw_only=True)
class DiffusionPipeline(ABC):
    """One served model. Frozen: a flavour or a pinned version is a copy (`dataclasses.replace`)."""

    name: str
    family: Family
    """Its declaration (families/): components, sizes and bounds."""
    triton: TritonClient
    latent_channels: int
    vae_scale_factor: int
    text_encoders: Mapping[str, int]
    """Each text encoder's token length, as the tokenizer model pads and truncates."""
    limits: Limits
    lora: LoraLayout | None
    """The denoiser's LoRA layers and rank budget; None where it was exported without them."""
    prompt_cache: PromptCache = field(default_factory=PromptCache, compare=False, repr=False)
    """Shared by the copies a version or flavour makes (`dataclasses.replace` keeps it)."""

    @staticmethod
    def _metadata_fields(
        name: str, family: Family, metadata: Mapping[str, Any], triton: TritonClient
    ) -> dict[str, Any]:
        """The fields above from the denoiser's pipeline metadata (export/repository.py writes it) and
        the family's declaration: the variant's request parameters, LoRA's added where it was exported."""
        lora = LoraLayout.from_metadata(metadata["lora"]) if "lora" in metadata else None
        parameters = family.served_variant(metadata).parameters | (LORA_PARAMETERS if lora else frozenset())
        return {
            "name": name,
            "family": family,
            "triton": triton,
            "latent_channels": int(metadata["latent_channels"]),
            "vae_scale_factor": int(metadata["vae_scale_factor"]),
            "text_encoders": dict(metadata["text_encoders"]),
            "limits": Limits.of(family, metadata, parameters),
            "lora": lora,
        }

    @abstractmethod
    async def generate(self, job: GenerationJob, progress: Progress) -> Generation: ...

    def _model(self, component: str) -> str:
        return model_name(self.name, component)

    @abstractmethod
    def passes(self, job: GenerationJob) -> int:
        """Denoiser rows per image and step: 2 where classifier-free guidance runs an unconditional
        pass beside each image, else 1 (the work budget counts them)."""

    @staticmethod
    @abstractmethod
    def img2img_start(steps: int, strength: float) -> int:
        """The first step run from a noised input image at `strength`, as the family's diffusers img2img
        pipeline chooses it; the API refuses, before admission, a `strength` that leaves no step to run."""

    async def encode_prompts(
        self, prompts: list[str], caller: str, clock: InferenceClock
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """The family's two prompt tensors (`_encode_prompts`), one row per prompt, and whether a prompt
        was truncated; prompts this caller had this version encode before come from the cache."""
        (first, second), truncated = await self.prompt_cache.encode(
            caller, self.name, self.triton.model_version, prompts, functools.partial(self._encode_prompts, clock=clock)
        )
        return first, second, truncated

    @abstractmethod
    async def _encode_prompts(self, prompts: list[str], clock: InferenceClock) -> Encoded:
        """The tokenizer and the text encoders, for prompts the cache does not hold."""

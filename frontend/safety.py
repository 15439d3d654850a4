"""The safety filter: a prompt policy checked before generating, and an image-safety model checked
before any image is returned. Either refuses the whole request (`INFERENCE_3208`), with no image.

The image check runs the Triton model `image_safety` (written by `imagegen safety-model`, or any
model with its contract: uint8 RGB images `(H, W, 3)` in, one `unsafe_score` in [0, 1] out per
image). An image scoring at or above the threshold is refused. Without that model in Triton the
frontend logs so at start and checks prompts only.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from frontend.api.errors import ContentRejected
from frontend.triton import InferenceClock, TritonClient

log = logging.getLogger(__name__)

IMAGE_SAFETY_MODEL = "image_safety"


@dataclass(frozen=True)
class PromptPolicy:
    patterns: tuple[re.Pattern[str], ...]

    @classmethod
    def load(cls, path: Path) -> PromptPolicy:
        """One regular expression per line; blank lines and `#` comments are skipped."""
        patterns = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    patterns.append(re.compile(line.strip(), re.IGNORECASE))
                except re.error as exc:
                    raise ValueError(f"{path}:{number}: not a regular expression: {exc}") from None
        return cls(tuple(patterns))

    def check(self, prompt: str) -> None:
        # NFKC folds look-alike characters (fullwidth letters, ligatures) that would slip past a pattern.
        normalized = unicodedata.normalize("NFKC", prompt)
        if any(pattern.search(normalized) for pattern in self.patterns):
            raise ContentRejected("The prompt was rejected by the safety filter.", param="prompt")


@dataclass(frozen=True)
class ImageSafetyModel:
    triton: TritonClient
    threshold: float

    async def check(self, images: list[npt.NDArray[np.uint8]], clock: InferenceClock) -> None:
        """`images`: uint8 (height, width, 3), as the pipelines make them."""
        result = await self.triton.infer(IMAGE_SAFETY_MODEL, {"image": np.stack(images)}, ["unsafe_score"], clock)
        if (result["unsafe_score"] >= self.threshold).any():
            raise ContentRejected("A generated image was rejected by the safety filter; no image is returned.")


@dataclass(frozen=True)
class SafetyFilter:
    policy: PromptPolicy
    image_model: ImageSafetyModel | None

    @classmethod
    async def load(cls, policy: Path, triton: TritonClient, threshold: float) -> SafetyFilter:
        prompt_policy = PromptPolicy.load(policy)
        log.info("prompt policy: %d patterns from %s", len(prompt_policy.patterns), policy)
        if not await triton.model_ready(IMAGE_SAFETY_MODEL):
            log.warning("no %s model in Triton: generated images are returned unchecked", IMAGE_SAFETY_MODEL)
            return cls(prompt_policy, None)
        log.info("images are checked by %s (refused at unsafe_score >= %g)", IMAGE_SAFETY_MODEL, threshold)
        return cls(prompt_policy, ImageSafetyModel(triton, threshold))

    def check_prompt(self, prompt: str) -> None:
        self.policy.check(prompt)

    async def check_images(self, images: list[npt.NDArray[np.uint8]], clock: InferenceClock) -> None:
        if self.image_model is not None:
            await self.image_model.check(images, clock)

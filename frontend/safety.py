"""The safety filter: a prompt policy checked before generating, and an image-safety model checked
before any image is returned. Either refuses the whole request (`INFERENCE_3208`), with no image.

The image check runs the Triton model `image_safety` (written by `imagegen safety-model`, or any
model with its contract: uint8 RGB images `(H, W, 3)` in, one `unsafe_score` in [0, 1] out per
image). An image scoring at or above the threshold is refused. Without that model in Triton the
frontend logs so at start and checks prompts only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from frontend.accounting import InferenceClock
from frontend.errors import ContentRejected, InvalidParameter
from frontend.triton_pool import TritonPool

log = logging.getLogger(__name__)

IMAGE_SAFETY_MODEL = "image_safety"


WORD = re.compile(r"\w+")
"""A prompt's words: runs of Unicode letters, digits and `_`, as `\\b...\\b` delimits them."""
RULE_WORD = re.compile(r"\w+\*?")
MAX_PROMPT_CHARACTERS = 10_000
"""The longest prompt or negative prompt a request may send (api/protocol.py bounds both by it)."""
MAX_NORMALIZED_CHARACTERS = 2 * MAX_PROMPT_CHARACTERS
"""NFKC expands some characters many times over (U+FDFA into 18): a prompt that grows past this is
refused before its words are read, so the check's time and memory stay bounded by the prompt's size."""


def fold(text: str) -> str:
    """What the policy compares: NFKC folds look-alikes (fullwidth letters, ligatures) that would slip
    past a rule, case folding makes the comparison case-insensitive."""
    return unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True)
class WordGroup:
    """Alternatives: whole words, and prefixes (written `porn*`) that any word they begin matches."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def found_in(self, prompt_words: set[str]) -> bool:
        if not self.exact.isdisjoint(prompt_words):
            return True
        return bool(self.prefixes) and any(word.startswith(self.prefixes) for word in prompt_words)


@dataclass(frozen=True)
class PromptPolicy:
    """Rules of word groups: a prompt is refused when it holds a word of every group of one rule, in
    any order. Matching a set of words takes time linear in the prompt, whatever it holds; the regular
    expressions this replaces (`\\b(kid|...)\\b.*\\b(nude|...)\\b`) backtracked quadratically and
    held the event loop for seconds on one crafted prompt."""

    rules: tuple[tuple[WordGroup, ...], ...]

    @classmethod
    def load(cls, path: Path) -> PromptPolicy:
        """One rule per line, groups separated by `&`, words by spaces; blank lines and `#` comments
        are skipped. A line that is not words (an old regular expression) names its line."""
        rules = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            groups = []
            for group in line.split("&"):
                alternatives = group.split()
                if not alternatives or not all(RULE_WORD.fullmatch(word) for word in alternatives):
                    raise ValueError(
                        f"{path}:{number}: not a rule of words: groups of words separated by `&`, "
                        f"a word ending in `*` for a prefix ({group.strip()!r})"
                    )
                folded = [fold(word) for word in alternatives]
                groups.append(
                    WordGroup(
                        frozenset(word for word in folded if not word.endswith("*")),
                        tuple(word[:-1] for word in folded if word.endswith("*")),
                    )
                )
            rules.append(tuple(groups))
        return cls(tuple(rules))

    def check(self, prompt: str) -> None:
        """CPU-bound on a long prompt: callers run it off the event loop (`SafetyFilter.check_prompt`)."""
        folded = fold(prompt)
        if len(folded) > MAX_NORMALIZED_CHARACTERS:
            raise InvalidParameter(
                f"`prompt` grows to {len(folded)} characters under Unicode normalisation (NFKC); "
                f"at most {MAX_NORMALIZED_CHARACTERS} are read.",
                param="prompt",
            )
        prompt_words = set(WORD.findall(folded))
        if any(all(group.found_in(prompt_words) for group in rule) for rule in self.rules):
            raise ContentRejected("The prompt was rejected by the safety filter.", param="prompt")


@dataclass(frozen=True)
class ImageSafetyModel:
    pool: TritonPool
    threshold: float

    async def check(self, images: list[npt.NDArray[np.uint8]], clock: InferenceClock) -> None:
        """`images`: uint8 (height, width, 3), as the pipelines make them; on the least busy server."""
        with self.pool.serving(self.pool.pick([IMAGE_SAFETY_MODEL])) as triton:
            result = await triton.infer(IMAGE_SAFETY_MODEL, {"image": np.stack(images)}, ["unsafe_score"], clock)
        if (result["unsafe_score"] >= self.threshold).any():
            raise ContentRejected("A generated image was rejected by the safety filter; no image is returned.")


@dataclass(frozen=True)
class SafetyFilter:
    policy: PromptPolicy
    image_model: ImageSafetyModel | None

    @classmethod
    async def load(cls, policy: Path, pool: TritonPool, threshold: float) -> SafetyFilter:
        prompt_policy = PromptPolicy.load(policy)
        log.info("prompt policy: %d rules from %s", len(prompt_policy.rules), policy)
        if IMAGE_SAFETY_MODEL not in pool.known_models():
            log.warning("no %s model in Triton: generated images are returned unchecked", IMAGE_SAFETY_MODEL)
            return cls(prompt_policy, None)
        log.info("images are checked by %s (refused at unsafe_score >= %g)", IMAGE_SAFETY_MODEL, threshold)
        return cls(prompt_policy, ImageSafetyModel(pool, threshold))

    async def check_prompt(self, prompt: str) -> None:
        """Off the event loop: a 10,000-character prompt must not delay other clients' requests."""
        await asyncio.to_thread(self.policy.check, prompt)

    async def check_images(self, images: list[npt.NDArray[np.uint8]], clock: InferenceClock) -> None:
        if self.image_model is not None:
            await self.image_model.check(images, clock)

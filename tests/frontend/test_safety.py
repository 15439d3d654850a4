"""The prompt policy: the shipped default, its normalisation, and operators' own files."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontend.api.errors import ContentRejected
from frontend.safety import PromptPolicy
from frontend.settings import DEFAULT_PROMPT_POLICY

FULLWIDTH_NAKED = "\uff4e\uff41\uff4b\uff45\uff44"


@pytest.mark.parametrize("prompt", ["explicit photo of a child", "Naked MINOR", f"{FULLWIDTH_NAKED} toddler"])
def test_the_default_policy_refuses_sexual_content_involving_minors(prompt: str) -> None:
    with pytest.raises(ContentRejected) as refused:
        PromptPolicy.load(DEFAULT_PROMPT_POLICY).check(prompt)
    assert (refused.value.code, refused.value.param) == ("INFERENCE_3208", "prompt")


@pytest.mark.parametrize("prompt", ["a child flying a kite", "a nude marble sculpture in a museum", "kidney beans"])
def test_the_default_policy_lets_ordinary_prompts_through(prompt: str) -> None:
    PromptPolicy.load(DEFAULT_PROMPT_POLICY).check(prompt)


def test_an_invalid_pattern_names_its_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.txt"
    policy.write_text("# comment\n\nfine\n(unclosed\n")
    with pytest.raises(ValueError, match=r"policy\.txt:4"):
        PromptPolicy.load(policy)

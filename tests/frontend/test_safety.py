"""The prompt policy: the shipped default, its normalisation, and operators' own files."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontend.errors import ContentRejected, InvalidParameter
from frontend.safety import MAX_NORMALIZED_CHARACTERS, PromptPolicy
from frontend.settings import DEFAULT_PROMPT_POLICY

FULLWIDTH_NAKED = "\uff4e\uff41\uff4b\uff45\uff44"


@pytest.mark.parametrize(
    "prompt", ["explicit photo of a child", "Naked MINOR", f"{FULLWIDTH_NAKED} toddler", "kids, pornographic"]
)
def test_the_default_policy_refuses_sexual_content_involving_minors(prompt: str) -> None:
    with pytest.raises(ContentRejected) as refused:
        PromptPolicy.load(DEFAULT_PROMPT_POLICY).check(prompt)
    assert (refused.value.code, refused.value.param) == ("INFERENCE_3208", "prompt")


@pytest.mark.parametrize(
    "prompt", ["a child flying a kite", "a nude marble sculpture in a museum", "kidney beans", "kid" + "\ufdfa" * 1000]
)
def test_the_default_policy_lets_ordinary_prompts_through(prompt: str) -> None:
    PromptPolicy.load(DEFAULT_PROMPT_POLICY).check(prompt)


@pytest.mark.parametrize("line", ["(unclosed", r"\bforbidden\s+fruit\b", "forbidden & & fruit"])
def test_a_line_that_is_not_a_rule_of_words_names_its_line(tmp_path: Path, line: str) -> None:
    """An operator's file of regular expressions (the format before) is refused at start, not misread."""
    policy = tmp_path / "policy.txt"
    policy.write_text(f"# comment\n\nfine\n{line}\n")
    with pytest.raises(ValueError, match=r"policy\.txt:4"):
        PromptPolicy.load(policy)


def test_a_rule_needs_a_word_of_every_group_in_any_order(tmp_path: Path) -> None:
    policy = tmp_path / "policy.txt"
    policy.write_text("forbidden & fruit apple*\n")
    for prompt in ("the FORBIDDEN  fruit", "apples, forbidden ones", "fruit_forbidden? no: Fruit, forbidden"):
        with pytest.raises(ContentRejected):
            PromptPolicy.load(policy).check(prompt)
    for prompt in ("a forbidden door", "an apple", "forbiddenfruit"):
        PromptPolicy.load(policy).check(prompt)


def test_a_prompt_that_grows_past_the_cap_under_nfkc_is_refused_before_its_words_are_read() -> None:
    """U+FDFA becomes 18 characters: issue 16's 10,000-character prompt is 95,000 once normalised."""
    with pytest.raises(InvalidParameter) as refused:
        PromptPolicy.load(DEFAULT_PROMPT_POLICY).check("kid " * 1250 + "\ufdfa" * 5000)
    assert (refused.value.code, refused.value.param) == ("VALIDATION_4004", "prompt")
    assert str(MAX_NORMALIZED_CHARACTERS) in refused.value.message

"""The tokenizer model with full-size vocabularies. CLIP: OpenAI's 48,894 merges, read from the
open-clip-torch wheel that `make` fetches (`pip download --no-deps`), give the published ids and pass
the export. T5: a Unigram tokenizer of T5's size and special ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from export.clip_merges import VOCABULARY_SIZE, clip_merges
from export.tiny import build_clip_tokenizer, build_t5_tokenizer
from export.tokenizer import export_tokenizer

WHEELS = Path(__file__).resolve().parents[2] / ".imagegen" / "wheels"
MAX_LENGTH = 77
T5_MAX_LENGTH = 512  # FLUX.1-dev's
T5_TOKENS = 32100
# CLIP's ids, as OpenAI's tokenizer gives them: <|startoftext|>, "a", "photo", "of", "a", "cat", <|endoftext|>.
PUBLISHED_IDS = {"a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407]}


@pytest.fixture(scope="module")
def wheel() -> Path:
    found = sorted(Path(os.environ.get("IMAGEGEN_CLIP_WHEEL_DIR", WHEELS)).glob("open_clip_torch-*.whl"))
    if not found:
        pytest.fail(f"no open-clip-torch wheel in {WHEELS}: `make test` fetches it (pip download --no-deps)")
    return found[-1]


def test_real_merges_give_clips_published_ids(wheel: Path) -> None:
    tokenizer = build_clip_tokenizer(merges=clip_merges(wheel))
    assert len(tokenizer) == VOCABULARY_SIZE
    for prompt, ids in PUBLISHED_IDS.items():
        assert tokenizer(prompt).input_ids == ids


def test_exported_tokenizer_pads_and_truncates_as_transformers_with_the_full_vocabulary(
    wheel: Path, tmp_path: Path
) -> None:
    reference = build_clip_tokenizer(merges=clip_merges(wheel))
    reference.save_pretrained(tmp_path / "tokenizer")
    out = tmp_path / "tokenizer.json"
    export_tokenizer(tmp_path / "tokenizer", MAX_LENGTH, out)
    exported = Tokenizer.from_file(str(out))
    long_prompt = "an oil painting of a hanseatic cog entering lübeck harbour at dawn, " * 12
    for prompt in ("a photo of a cat", long_prompt, "Zürich's Ünïcödé 1234 ✨"):
        expected = reference(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
        assert exported.encode(prompt).ids == expected
        assert len(expected) == MAX_LENGTH


def test_t5_tokenizer_of_real_size_keeps_t5s_ids_through_the_export(tmp_path: Path) -> None:
    """32,000 Unigram pieces and the 100 sentinels after them, as google/t5-v1_1-xxl's tokenizer has them
    (synthetic pieces: no T5 SentencePiece model can be downloaded here)."""
    reference = build_t5_tokenizer(real_size=True)
    assert len(reference) == T5_TOKENS
    assert (reference.pad_token_id, reference.eos_token_id, reference.unk_token_id) == (0, 1, 2)
    assert reference.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [T5_TOKENS - 1, T5_TOKENS - 100]
    reference.save_pretrained(tmp_path / "tokenizer_2")
    out = tmp_path / "tokenizer.json"
    export_tokenizer(tmp_path / "tokenizer_2", T5_MAX_LENGTH, out)
    exported = Tokenizer.from_file(str(out))
    for prompt in ("a photo of a cat", "zq xylophone <extra_id_0> " * 200, "Zürich ✨"):
        expected = reference(prompt, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True).input_ids
        assert exported.encode(prompt).ids == expected
        assert len(expected) == T5_MAX_LENGTH

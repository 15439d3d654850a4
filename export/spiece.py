"""T5's `spiece.model`, written from a Unigram tokenizer: the SentencePiece file the published
`tokenizer_2/` folders carry beside (or instead of) `tokenizer.json`.

The pieces, scores and special ids are the tokenizer's (`<pad>` 0 and `</s>` 1 as control symbols,
`<unk>` 2); the sentinels `<extra_id_N>` stay out of it, as in T5's own file, where the tokenizer adds
them after the pieces. The normalizer is SentencePiece's `identity`: T5's `nmt_nfkc` character map is
compiled by SentencePiece's trainer, which the exporter does not need.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as model_pb2
from transformers import T5Tokenizer

SPIECE_MODEL = "spiece.model"
SENTINEL = re.compile(r"<extra_id_\d+>")
Piece = model_pb2.ModelProto.SentencePiece


def save_spiece_model(tokenizer: T5Tokenizer, folder: Path) -> Path:
    """Write `folder/spiece.model` for `tokenizer`'s pieces before its sentinels."""
    vocabulary = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["vocab"]
    pieces = [(piece, score) for piece, score in vocabulary if not SENTINEL.fullmatch(piece)]
    model = model_pb2.ModelProto()
    spec = model.trainer_spec
    spec.model_type = model_pb2.TrainerSpec.UNIGRAM
    spec.vocab_size = len(pieces)
    spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id = (
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
        -1,  # T5 has no beginning-of-sequence token
    )
    model.normalizer_spec.name = "identity"
    types = {
        tokenizer.pad_token_id: Piece.CONTROL,
        tokenizer.eos_token_id: Piece.CONTROL,
        tokenizer.unk_token_id: Piece.UNKNOWN,
    }
    for number, (piece, score) in enumerate(pieces):
        model.pieces.add(piece=piece, score=score, type=types.get(number, Piece.NORMAL))
    path = folder / SPIECE_MODEL
    path.write_bytes(model.SerializeToString())
    return path

"""Turn a checkpoint's tokenizer folder into one `tokenizer.json` that pads and truncates by itself.

The Triton tokenizer backend then needs only the `tokenizers` library, not transformers, and gives
the ids the diffusers pipeline gives (`padding="max_length"`, `truncation=True`).
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

CHECK_PROMPTS = ("a red fox", "A Hanseatic trading ship entering Lübeck harbor at dawn, painted in oils", "")


def export_tokenizer(folder: Path, max_length: int, out: Path) -> None:
    reference = AutoTokenizer.from_pretrained(folder)
    tokenizer = reference.backend_tokenizer
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(length=max_length, pad_id=reference.pad_token_id, pad_token=reference.pad_token)
    for prompt in CHECK_PROMPTS:
        expected = reference(prompt, padding="max_length", max_length=max_length, truncation=True).input_ids
        if tokenizer.encode(prompt).ids != expected:
            raise ValueError(f"{folder}: the fast tokenizer disagrees with transformers on {prompt!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))

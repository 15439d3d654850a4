"""CLIP's real BPE merges, read from the `open-clip-torch` wheel (PyPI) without installing it.

The wheel ships OpenAI's `bpe_simple_vocab_16e6.txt.gz`; CLIP's tokenizer uses its first 48,894 merges,
which with the 512 byte symbols and the two specials make the published vocabulary of 49,408. Installing
the package would pull torchvision and another torch, so `make` fetches the wheel alone
(`pip download --no-deps`) and this module reads the file out of the zip.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

MERGES_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"
VOCABULARY_SIZE = 49408
MERGES = VOCABULARY_SIZE - 2 * 256 - 2
"""OpenAI's `SimpleTokenizer`: `merges[1 : 49152 - 256 - 2 + 1]` of the file, after its version line."""
WHEELS = Path(__file__).resolve().parents[1] / ".imagegen" / "wheels"
"""Where `make` downloads the wheel (the Makefile's CLIP_WHEEL); `IMAGEGEN_CLIP_WHEEL_DIR` overrides."""


def clip_wheel() -> Path:
    """The newest `open_clip_torch-*.whl` in the wheel folder, or a message saying how to fetch it."""
    folder = Path(os.environ.get("IMAGEGEN_CLIP_WHEEL_DIR", WHEELS))
    found = sorted(folder.glob("open_clip_torch-*.whl"))
    if not found:
        raise FileNotFoundError(
            f"no open-clip-torch wheel in {folder}: fetch it with `pip download --no-deps --dest {folder} "
            "open-clip-torch==3.3.0` (make test and make test-real do)"
        )
    return found[-1]


def clip_merges(wheel: Path) -> list[tuple[str, str]]:
    """The merges, in rank order, from an `open_clip_torch-*.whl`."""
    with zipfile.ZipFile(wheel) as archive:
        lines = gzip.decompress(archive.read(MERGES_FILE)).decode("utf-8").split("\n")
    pairs = [tuple(line.split()) for line in lines[1 : MERGES + 1]]
    return [(first, second) for first, second in pairs]

"""`--checkpoint` as a Hugging Face repository id: resolved through huggingface_hub's cache.

`HF_HOME` / `HF_HUB_CACHE` place the cache, `HF_TOKEN` opens gated repositories (FLUX.1-dev), and
`HF_HUB_OFFLINE=1` serves the cache alone, never the network. Only what the export reads is fetched:
the diffusers layout's configs, safetensors weights and tokenizers, not the single-file copies and
other formats that published repositories also carry (FLUX.1-schnell's root `flux1-schnell.safetensors`
alone is 23.8 GB).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from huggingface_hub import snapshot_download

log = logging.getLogger(__name__)

EXPORTED_FILES = [
    "model_index.json",
    "scheduler/*.json",
    "*/config.json",
    "*/*.safetensors",
    "*/*.safetensors.index.json",
    "tokenizer*/*",
]
"""What the export reads, relative to the repository's root (subfolders one level deep)."""
NOT_EXPORTED = ["*.bin", "*.ckpt", "*.msgpack", "*.onnx", "*.onnx_data", "*.pt", "*.pth", "*.h5", "*.ot"]
"""Other weight formats a tokenizer folder or component may also carry."""
REPOSITORY_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(checkpoint: str | Path, skip: tuple[str, ...] = ()) -> Path:
    """A local folder as it is; else a Hub repository id ("ORG/NAME", optionally "@REVISION"), its
    snapshot folder in the cache, fetched first unless offline, without the weights of the component
    folders in `skip` (those a single-file checkpoint holds: export/single_file.py)."""
    if Path(checkpoint).exists() or not REPOSITORY_ID.match(str(checkpoint).split("@")[0]):
        return Path(checkpoint)
    repo_id, _, revision = str(checkpoint).partition("@")
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision or None,
            allow_patterns=EXPORTED_FILES,
            ignore_patterns=NOT_EXPORTED + [f"{folder}/*.safetensors*" for folder in skip],
        )
    except (OSError, ValueError) as error:  # huggingface_hub's not-found, offline and HTTP errors
        raise ValueError(
            f"{checkpoint}: no such folder, and the Hugging Face Hub did not resolve it: {error}"
        ) from error
    log.info("%s resolved to %s", checkpoint, folder)
    return Path(folder)

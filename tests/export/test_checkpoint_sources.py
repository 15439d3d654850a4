"""`--checkpoint` as a Hugging Face Hub id: resolved through huggingface_hub's cache, offline mode
honoured. The cache is laid out here from the tiny checkpoint as huggingface_hub writes it (blobs named
by content, snapshot files linking to them, `refs/main` naming the revision); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from export.hub import resolve_checkpoint
from tests.harness import own_environment

REPOSITORY_ID = "imagegen-tests/tiny-flux-schnell"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(checkpoint: Path, cache: Path) -> Path:
    """`checkpoint` as the Hub cache holds a download of it: models--ORG--NAME/{blobs,snapshots,refs}."""
    root = cache / ("models--" + REPOSITORY_ID.replace("/", "--"))
    snapshot = root / "snapshots" / REVISION
    for file in sorted(path for path in checkpoint.rglob("*") if path.is_file()):
        content = file.read_bytes()
        blob = root / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / file.relative_to(checkpoint)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REVISION)
    return snapshot


def repository_files(repository: Path, pipeline: str) -> dict[str, bytes]:
    return {
        path.relative_to(repository).as_posix(): path.read_bytes()
        for path in sorted(repository.glob(f"{pipeline}_*/**/*"))
        if path.is_file()
    }


def test_hub_id_exports_the_same_repository_bytes_offline(
    tiny_checkpoint: Path, model_repository: Path, tmp_path: Path
) -> None:
    """`imagegen export --checkpoint ORG/NAME` with HF_HUB_OFFLINE=1 reads the cached snapshot, and
    writes what the folder it came from wrote (the session repository's flux-schnell)."""
    cache = tmp_path / "hub"
    hub_cache(tiny_checkpoint, cache)
    env = {**own_environment(), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [str(Path(sys.executable).parent / "imagegen"), "export", "--checkpoint", REPOSITORY_ID]
    command += ["--name", "flux-schnell", "--repository", str(tmp_path / "repository")]
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert repository_files(tmp_path / "repository", "flux-schnell") == repository_files(
        model_repository, "flux-schnell"
    )


def test_hub_id_resolves_to_its_cached_snapshot_offline(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    snapshot = hub_cache(tiny_checkpoint, tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_checkpoint(REPOSITORY_ID) == snapshot
    assert resolve_checkpoint(f"{REPOSITORY_ID}@{REVISION}") == snapshot
    assert resolve_checkpoint(tiny_checkpoint) == tiny_checkpoint  # a folder stays a folder
    with pytest.raises(ValueError, match="did not resolve"):
        resolve_checkpoint("imagegen-tests/not-in-the-cache")

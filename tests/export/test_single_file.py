"""`--checkpoint` as one `.safetensors` file in the original layout (what fine-tunes ship), configured by
`--config`: written here from the tiny checkpoints (tests/export/original_layouts.py), it exports to
the same repository bytes as the diffusers folder it came from; nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.export.original_layouts import write_flux_single_file, write_sdxl_single_file
from tests.export.test_checkpoint_sources import repository_files
from tests.harness import own_environment

IMAGEGEN = str(Path(sys.executable).parent / "imagegen")


def export(checkpoint: Path, config: Path | None, name: str, repository: Path) -> subprocess.CompletedProcess[str]:
    command = [IMAGEGEN, "export", "--checkpoint", str(checkpoint), "--name", name, "--repository", str(repository)]
    command += ["--config", str(config)] if config else []
    env = {**own_environment(), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("family", "write"),
    [("flux-schnell", write_flux_single_file), ("sdxl", write_sdxl_single_file)],
    ids=["flux-transformer-alone", "sdxl-all-components"],
)
def test_single_file_exports_the_same_repository_bytes_as_its_folder(
    family: str,
    write: Callable[[Path, Path], Path],
    checkpoints: dict[str, Path],
    model_repository: Path,
    tmp_path: Path,
) -> None:
    """FLUX's file holds the transformer alone (the VAE and text encoders come from --config); SDXL's
    holds all four weighted components. Either way the export is the folder's, byte for byte."""
    single_file = write(checkpoints[family], tmp_path / f"{family}.safetensors")
    result = export(single_file, checkpoints[family], family, tmp_path / "repository")
    assert result.returncode == 0, result.stderr
    assert repository_files(tmp_path / "repository", family) == repository_files(model_repository, family)


def test_single_file_without_config_is_refused_with_what_to_give(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    single_file = write_flux_single_file(checkpoints["flux-schnell"], tmp_path / "fine-tune.safetensors")
    result = export(single_file, None, "flux-schnell", tmp_path / "repository")
    assert result.returncode == 2
    assert "FLUX.1 (Black Forest Labs' original layout) weights alone: give --config" in result.stderr
    assert "Traceback" not in result.stderr


def test_single_file_of_another_layout_is_refused_naming_the_known_ones(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    single_file = tmp_path / "sd15.safetensors"
    save_file(
        {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": torch.zeros(77, 8)},
        single_file,
    )
    result = export(single_file, checkpoints["sdxl"], "sdxl", tmp_path / "repository")
    assert result.returncode == 2
    assert "not a single-file checkpoint layout imagegen knows (supported: SDXL" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_of_another_family_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    single_file = write_flux_single_file(checkpoints["flux-schnell"], tmp_path / "fine-tune.safetensors")
    result = export(single_file, checkpoints["sdxl"], "flux-schnell", tmp_path / "repository")
    assert result.returncode == 2
    assert "is a StableDiffusionXLPipeline, not a FluxPipeline or FluxKontextPipeline" in result.stderr

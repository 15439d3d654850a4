"""The model repository the exporter writes: reviewed configs, complete tensors, working ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.tiny import build_tiny_checkpoint
from tests.harness import TINY_MODELS

COMMITTED = Path(__file__).resolve().parents[2] / "model_repository"
DENOISERS = {"flux-schnell": "transformer", "flux-dev": "transformer", "sdxl": "unet", "flux-kontext": "transformer"}


def test_committed_configs_are_what_the_exporter_writes(model_repository: Path) -> None:
    exported = {path.parent.name: path.read_text() for path in model_repository.glob("*/config.pbtxt")}
    committed = {path.parent.name: path.read_text() for path in COMMITTED.glob("*/config.pbtxt")}
    assert exported == committed


@pytest.mark.parametrize("pipeline", TINY_MODELS)
def test_every_component_is_exported_with_its_files(model_repository: Path, pipeline: str) -> None:
    files = sorted(
        path.relative_to(model_repository).as_posix() for path in model_repository.glob(f"{pipeline}_*/**/*.*")
    )
    assert files == [
        f"{pipeline}_{name}"
        for name in [
            "text_encoder/1/model.onnx",
            "text_encoder/config.pbtxt",
            "text_encoder_2/1/model.onnx",
            "text_encoder_2/config.pbtxt",
            "tokenizer/1/text_encoder/tokenizer.json",
            "tokenizer/1/text_encoder_2/tokenizer.json",
            "tokenizer/config.pbtxt",
            f"{DENOISERS[pipeline]}/1/model.onnx",
            f"{DENOISERS[pipeline]}/config.pbtxt",
            "vae_decoder/1/model.onnx",
            "vae_decoder/config.pbtxt",
            "vae_encoder/1/model.onnx",
            "vae_encoder/config.pbtxt",
        ]
    ]


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    first = build_tiny_checkpoint("flux-schnell", tmp_path / "a", seed=3)
    second = build_tiny_checkpoint("flux-schnell", tmp_path / "b", seed=3)
    files = sorted(path.relative_to(first) for path in first.rglob("*.safetensors"))
    assert files
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in files)


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model family"):
        build_tiny_checkpoint("dalle-9", tmp_path)


def test_large_models_keep_weights_in_external_data(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real FLUX transformer is over protobuf's 2 GB: the same path must write and load external data."""
    from export import flux, onnx

    modules = flux.load_modules(tiny_checkpoint)
    components, _ = flux.describe(modules)
    vae = next(component for component in components if component.name == "vae_decoder")
    monkeypatch.setattr(onnx, "EXTERNAL_DATA_BYTES", 0)
    error = onnx.export_onnx(modules["vae_decoder"], vae, tmp_path / "1" / "model.onnx")
    assert (tmp_path / "1" / "model.onnx.data").stat().st_size > 100_000
    assert error <= 1  # uint8 pixels: a float difference can tip a value to its neighbour when rounded

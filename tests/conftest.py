"""Session fixtures: one tiny checkpoint, its export, and the real `imagegen serve` over a socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Server, start_server, stop_server


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint("flux-schnell", tmp_path_factory.mktemp("checkpoint") / "flux-schnell", seed=0)


@pytest.fixture(scope="session")
def model_repository(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.checkpoint import export_checkpoint

    repository = tmp_path_factory.mktemp("model_repository")
    export_checkpoint(tiny_checkpoint, "flux-schnell", repository)
    return repository


@pytest.fixture(scope="session")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(model_repository, tmp_path_factory.mktemp("state"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def diffusers_pipeline(tiny_checkpoint: Path) -> Any:
    from diffusers import FluxPipeline

    return FluxPipeline.from_pretrained(tiny_checkpoint)

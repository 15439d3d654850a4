"""`imagegen export --version N`: a version beside the others shares their config.pbtxt, which Triton
applies to every version of a model, so a version that would change it is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from export.checkpoint import write_shared_config

MODEL = "flux-schnell_transformer"


@pytest.fixture
def repository(model_repository: Path, tmp_path: Path) -> Path:
    shutil.copytree(model_repository / MODEL, tmp_path / MODEL)
    return tmp_path


def served_config(repository: Path) -> pb.ModelConfig:
    return text_format.Parse((repository / MODEL / "config.pbtxt").read_text(), pb.ModelConfig())


def test_a_second_version_with_the_same_config_is_written_beside_the_first(repository: Path) -> None:
    before = (repository / MODEL / "config.pbtxt").read_text()
    write_shared_config(repository, served_config(repository), version=2)
    assert (repository / MODEL / "config.pbtxt").read_text() == before


def test_a_second_version_that_changes_the_config_is_refused(repository: Path) -> None:
    changed = served_config(repository)
    changed.parameters["imagegen.pipeline"].string_value = '{"family": "flux", "default_steps": 8}'
    with pytest.raises(ValueError, match="export it under another --name"):
        write_shared_config(repository, changed, version=2)
    assert served_config(repository) != changed


def test_the_only_version_may_change_its_config(repository: Path) -> None:
    changed = served_config(repository)
    changed.max_batch_size = 3
    write_shared_config(repository, changed, version=1)
    assert served_config(repository) == changed

"""Session fixtures: tiny checkpoints, one model repository with all of them, and the real
`imagegen serve` over a socket."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import TINY_MODELS, Server, serving
from tests.postgres import PostgresCluster


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from export.tiny import build_tiny_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    return {name: build_tiny_checkpoint(name, folder / name, seed=0) for name in TINY_MODELS}


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoints: dict[str, Path]) -> Path:
    return checkpoints["flux-schnell"]


@pytest.fixture(scope="session")
def model_repository(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.checkpoint import export_checkpoint
    from export.safety import export_safety_model

    repository = tmp_path_factory.mktemp("model_repository")
    for name, checkpoint in checkpoints.items():
        export_checkpoint(checkpoint, name, repository)
    export_safety_model(repository)
    return repository


@pytest.fixture(scope="session")
def schnell_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """flux-schnell and the image-safety model alone, for servers of a test's own that need no other
    model: Triton loads a third of the models, so they start sooner."""
    repository = tmp_path_factory.mktemp("schnell-repository")
    for folder in model_repository.iterdir():
        if folder.name.startswith("flux-schnell_") or folder.name == "image_safety":
            shutil.copytree(folder, repository / folder.name)
    return repository


@pytest.fixture(scope="session")
def version_2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny flux-schnell built with another seed: other weights, so images tell a version 2
    exported from it apart from version 1 (the rollout tests)."""
    from export.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint("flux-schnell", tmp_path_factory.mktemp("version-2") / "flux-schnell", seed=1)


@pytest.fixture(scope="session")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The suite sends far more requests with the operator's key than a person would, and signs in to
    # many accounts from one address; the rate-limit tests use plans and servers with limits of their own.
    unlimited = {
        "IMAGEGEN_REQUESTS_PER_MINUTE": "100000",
        "IMAGEGEN_CONCURRENT_GENERATIONS": "100",
        "IMAGEGEN_SIGN_INS_PER_ADDRESS": "100000",
    }
    # Jobs' webhooks to receivers the tests run on this host, and a pattern to refuse others by
    # (tests/e2e/test_webhooks.py).
    webhooks = {"IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,*.example.com"}
    with serving(model_repository, tmp_path_factory.mktemp("state"), settings={**unlimited, **webhooks}) as running:
        yield running


@pytest.fixture(scope="session")
def strict_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server whose image-safety threshold refuses every image, whose prompt policy refuses
    prompts naming a forbidden fruit, which refuses `moderation=low`, and whose browser sessions last
    one second."""
    state = tmp_path_factory.mktemp("strict")
    policy = state / "prompt_policy.txt"
    policy.write_text("forbidden & fruit\n")  # a rule: both words, in any order
    settings = {
        "IMAGEGEN_SAFETY_THRESHOLD": "0",
        "IMAGEGEN_PROMPT_POLICY": str(policy),
        "IMAGEGEN_SESSION_TTL": "1",
        "IMAGEGEN_MODERATION_LOW": "off",
    }
    with serving(model_repository, state, settings=settings) as running:
        yield running


GUARDED_SETTINGS = {
    "IMAGEGEN_REQUESTS_PER_MINUTE": "100000",
    "IMAGEGEN_CONCURRENT_GENERATIONS": "100",
    "IMAGEGEN_RUNNING_PER_MODEL": "2",
    "IMAGEGEN_QUEUED_PER_MODEL": "2",
    "IMAGEGEN_MAX_BODY_BYTES": str(1024 * 1024),
    "IMAGEGEN_MAX_PIXELS_PER_REQUEST": str(2 * 256 * 256),
}
"""A small queue per model, a 1 MiB body limit and a two-256x256-image pixel budget; per-key limits
out of the way, so every 429 is the queue's."""


@pytest.fixture(scope="session")
def guarded_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with tight overload and input limits (GUARDED_SETTINGS)."""
    with serving(model_repository, tmp_path_factory.mktemp("guarded"), settings=GUARDED_SETTINGS) as running:
        yield running


@pytest.fixture(scope="session")
def diffusers_pipeline(tiny_checkpoint: Path) -> Any:
    from diffusers import FluxPipeline

    return FluxPipeline.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="session")
def sdxl_checkpoint(checkpoints: dict[str, Path]) -> Path:
    return checkpoints["sdxl"]


@pytest.fixture(scope="session")
def sdxl_diffusers_pipeline(sdxl_checkpoint: Path) -> Any:
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(sdxl_checkpoint)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL server for the session (tests/postgres.py)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:  # a failed start too: its folder is removed
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`IMAGEGEN_STORE` of a new, empty store in each dialect: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "imagegen.db")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database()

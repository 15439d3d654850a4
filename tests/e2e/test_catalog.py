"""The operator's catalog (IMAGEGEN_CATALOG): public ids, aliases and flavour suffixes, listed by
`GET /v1/models`, served, and reloaded without a restart."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.images import AUTH, post
from tests.harness import Server, serving, wait_until

CATALOG = """
[models]
"flux-schnell" = "flux-schnell"
"painter" = "sdxl"

[aliases]
"dall-e-3" = "flux-schnell"
"dall-e-2" = "painter"

[flavours."flux-schnell".eco]
steps = 1

[flavours."painter".speed]
pipeline = "flux-schnell"
"""
SMALL = {"prompt": "A red bicycle leaning on a blue door", "width": 256, "height": 256, "seed": 5}


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.toml"
    path.write_text(CATALOG)
    return path


@pytest.fixture(scope="module")
def catalog_server(
    model_repository: Path, catalog_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = {"IMAGEGEN_CATALOG": str(catalog_file), "IMAGEGEN_REQUESTS_PER_MINUTE": "100000"}
    with serving(model_repository, tmp_path_factory.mktemp("catalog-state"), settings=settings) as server:
        yield server


@pytest.fixture
def edited_catalog(catalog_server: Server, catalog_file: Path) -> Iterator[Path]:
    """The module's catalog file, to edit: the catalog the other tests read is back after the test."""
    yield catalog_file
    catalog_file.write_text(CATALOG)
    response = httpx.post(f"{catalog_server.base_url}/admin/catalog/reload", headers=AUTH)
    assert response.status_code == 200, response.text


def models(server: Server) -> dict[str, dict[str, object]]:
    response = httpx.get(f"{server.base_url}/models", headers=AUTH)
    assert response.status_code == 200, response.text
    return {model["id"]: model for model in response.json()["data"]}


def image(server: Server, model: str, **more: object) -> str:
    response = post(server, {**SMALL, "model": model, **more})
    assert response.status_code == 200, response.text
    b64: str = response.json()["data"][0]["b64_json"]
    return b64


def test_models_lists_the_catalog_ids_aliases_and_flavours_only(catalog_server: Server) -> None:
    listed = models(catalog_server)
    assert sorted(listed) == ["dall-e-2", "dall-e-3", "flux-schnell", "flux-schnell:eco", "painter", "painter:speed"]
    assert listed["painter"]["pipeline"] == "sdxl"
    assert listed["painter:speed"]["pipeline"] == "flux-schnell"
    limits = {model: listed[model]["limits"] for model in ("flux-schnell", "flux-schnell:eco")}
    assert [limit["default_steps"] for limit in limits.values()] == [4, 1]  # type: ignore[index]


def test_a_flavour_serves_its_defaults_or_its_pipeline(catalog_server: Server) -> None:
    assert image(catalog_server, "flux-schnell:eco") == image(catalog_server, "flux-schnell", steps=1)
    assert image(catalog_server, "flux-schnell:eco", steps=3) == image(catalog_server, "flux-schnell", steps=3)
    assert image(catalog_server, "painter:speed") == image(catalog_server, "flux-schnell")
    # A known flavour the catalog does not configure serves the model as it is.
    assert image(catalog_server, "dall-e-3:balanced") == image(catalog_server, "flux-schnell")


@pytest.mark.parametrize("model", ["flux-dev", "sdxl", "flux-schnell:fancy", "painter:eco:speed"])
def test_ids_outside_the_catalog_do_not_exist(catalog_server: Server, model: str) -> None:
    response = post(catalog_server, {**SMALL, "model": model})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "INFERENCE_3001"


def test_the_catalog_is_reloaded_without_a_restart(catalog_server: Server, edited_catalog: Path) -> None:
    edited_catalog.write_text(CATALOG.replace('"dall-e-2" = "painter"', '"dall-e-2" = "painter"\n"house" = "painter"'))
    response = httpx.post(f"{catalog_server.base_url}/admin/catalog/reload", headers=AUTH)
    assert response.status_code == 200, response.text
    assert "house" in response.json()["models"]
    assert "house" in models(catalog_server)

    # A file that does not parse is refused; the catalog served stays as it was.
    edited_catalog.write_text("[models\n")
    response = httpx.post(f"{catalog_server.base_url}/admin/catalog/reload", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ADMIN_4220"
    assert "house" in models(catalog_server)

    # Without the endpoint: every frontend notices the changed file at its next refresh.
    without_eco = CATALOG.replace('[flavours."flux-schnell".eco]\nsteps = 1\n', "")
    edited_catalog.write_text(without_eco)
    wait_until(lambda: "flux-schnell:eco" not in models(catalog_server), 30, "the changed catalog file reloaded")
    assert "house" not in models(catalog_server)

    # Even a rewrite of the same size within the same timestamp tick (here: the time set back).
    written = edited_catalog.stat()
    edited_catalog.write_text(without_eco.replace('"dall-e-2"', '"dall-e-9"'))
    os.utime(edited_catalog, ns=(written.st_atime_ns, written.st_mtime_ns))
    wait_until(lambda: "dall-e-9" in models(catalog_server), 30, "the catalog rewritten within a tick reloaded")

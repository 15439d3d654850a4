"""The embedded Triton behind the frontend (SECURITY.md): its model control refuses whoever lacks the
secret made at its start, while the frontend, which holds it, still rolls versions out; and what
Triton says when it fails goes to the log under the request's id, never to the client.

One server of its own, on a copy of flux-schnell: the tests unload models and add a version.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from frontend.triton import SECRET_HEADER
from tests.e2e.images import post
from tests.harness import API_KEY, Server, embedded_triton_secret, embedded_triton_url, imagegen, serving

MODEL = "flux-schnell"
SMALL = {"prompt": "a harbour at dawn", "model": MODEL, "size": "256x256", "steps": 1}


@pytest.fixture(scope="module")
def repository(schnell_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("secured-repository")
    shutil.copytree(schnell_repository, copy, dirs_exist_ok=True)
    return copy


@pytest.fixture(scope="module")
def secured_server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(repository, tmp_path_factory.mktemp("secured-state")) as server:
        yield server


def triton_api(server: Server) -> str:
    return f"http://{embedded_triton_url(server)}/v2"


def test_tritons_model_control_refuses_callers_without_the_secret_and_rollouts_still_work(
    secured_server: Server, repository: Path
) -> None:
    transformer = f"{triton_api(secured_server)}/repository/models/{MODEL}_transformer"
    assert httpx.post(f"{transformer}/unload").status_code == 403
    # A load may carry the model's files (a Python model is code): refused the same way.
    files = {"parameters": {"config": "{}", "file:1/model.py": "cHJpbnQoJ293bmVkJyk="}}
    assert httpx.post(f"{triton_api(secured_server)}/repository/models/intruder/load", json=files).status_code == 403
    assert httpx.post(f"{triton_api(secured_server)}/repository/index", json={}).status_code == 403
    assert httpx.get(f"{triton_api(secured_server)}/models/{MODEL}_transformer/ready").status_code == 200

    # Version 2 (version 1's files) beside the served one; the frontend loads it, switches, unloads 1.
    for component in repository.glob(f"{MODEL}_*"):
        shutil.copytree(component / "1", component / "2")
    imagegen(secured_server, "rollout", MODEL, "--version", "2", "--url", secured_server.root, "--key", API_KEY)
    response = post(secured_server, SMALL)
    assert (response.status_code, response.headers["X-Model-Version"]) == (200, "2")
    index = httpx.post(
        f"{triton_api(secured_server)}/repository/index",
        json={"ready": True},
        headers={SECRET_HEADER: embedded_triton_secret(secured_server)},
    ).json()
    assert {entry["version"] for entry in index if entry["name"] == f"{MODEL}_transformer"} == {"2"}


def test_a_triton_failure_is_logged_with_the_request_id_and_the_client_gets_a_generic_error(
    secured_server: Server,
) -> None:
    decoder = f"{triton_api(secured_server)}/repository/models/{MODEL}_vae_decoder"
    secret = {SECRET_HEADER: embedded_triton_secret(secured_server)}
    assert httpx.post(f"{decoder}/unload", headers=secret).status_code == 200
    try:
        response = post(secured_server, SMALL)
    finally:
        assert httpx.post(f"{decoder}/load", headers=secret, timeout=60).status_code == 200

    assert (response.status_code, response.json()["error"]["code"]) == (503, "INFERENCE_3503")
    message = response.json()["error"]["message"]
    assert "vae_decoder" not in message and "unknown model" not in message.lower()
    request_id = response.headers["X-Request-Id"]
    logged = [line for line in secured_server.log.read_text().splitlines() if request_id in line]
    assert any(f"'{MODEL}_vae_decoder'" in line and "unknown model" in line.lower() for line in logged), logged

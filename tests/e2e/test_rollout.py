"""Rolling a pipeline's version out and back on the real stack: `imagegen export --version 2` beside
the served version 1, `imagegen rollout`, a canary, `imagegen rollback`, under load, and a Triton
restart that must come back on the routed version.

The server runs on a copy of the session's flux-schnell models (never the shared folder), and
version 2 is the tiny checkpoint built with another seed: other weights, so images tell the
versions apart, and diffusers with that checkpoint is the oracle of what version 2 must serve.
Each test starts from the same routing (`rollout_server`), whichever test ran before it and
however that one ended.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from frontend.pipelines.flux import initial_latents
from frontend.triton import SECRET_HEADER
from tests.e2e.images import AUTH, assert_matches, decode, post
from tests.e2e.load import Load
from tests.harness import (
    API_KEY,
    Server,
    embedded_triton_pid,
    embedded_triton_secret,
    embedded_triton_url,
    imagegen,
    serving,
    wait_until,
)

MODEL = "flux-schnell"
PROMPT = "A lighthouse on a basalt cliff in a storm"
SMALL = {"prompt": PROMPT, "model": MODEL, "width": 256, "height": 256, "steps": 2}
SEED = 11
CLIENTS = 4
CANARY_USERS = 100
CANARY_PERCENT = 25
# 100 users at 25%: mean 25, standard deviation 4.3; these bounds are 4.6 deviations out (p < 1e-5).
CANARY_BOUNDS = (5, 45)


@pytest.fixture(scope="module")
def started_rollout_server(
    model_repository: Path, version_2_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server on a copy of flux-schnell version 1; version 2 is then exported beside it while it
    runs, as an operator does."""
    from export.checkpoint import export_checkpoint

    repository = tmp_path_factory.mktemp("rollout-repository")
    for folder in model_repository.iterdir():
        if folder.name.startswith(f"{MODEL}_") or folder.name == "image_safety":
            shutil.copytree(folder, repository / folder.name)
    unlimited = {"IMAGEGEN_REQUESTS_PER_MINUTE": "100000", "IMAGEGEN_CONCURRENT_GENERATIONS": "100"}
    with serving(repository, tmp_path_factory.mktemp("rollout-state"), settings=unlimited) as server:
        export_checkpoint(version_2_checkpoint, MODEL, repository, version=2)
        yield server


@pytest.fixture
def rollout_server(started_rollout_server: Server) -> Server:
    """The server as each test starts with it, whatever the test before left: version 1 serves every
    request and is the only version loaded; version 2 is exported beside it."""
    server = started_rollout_server
    wait_until(lambda: ready(server), 120, "the server ready")  # after a test that killed Triton
    route = followed_route(server)
    if route["canary_version"] is not None:
        admin(server, "rollback", MODEL)  # ends the canary, keeps the stable version
    if route["stable_version"] != 1:
        admin(server, "rollout", MODEL, "--version", "1")
    if loaded_versions(server) != {1}:
        # A restarted Triton loads version 2, the latest on disk, beside the routed 1: only a switch
        # unloads what its route does not serve.
        admin(server, "rollout", MODEL, "--version", "2")
        admin(server, "rollout", MODEL, "--version", "1")
    route = followed_route(server)
    assert (route["stable_version"], route["canary_version"], loaded_versions(server)) == (1, None, {1})
    return server


@pytest.fixture
def routed_rollout_server(rollout_server: Server) -> Server:
    """As `rollout_server`, with version 1 written in the store's routing table by a switch: until
    then a server follows the version it found loaded, and a restarted Triton loads version 2."""
    if followed_route(rollout_server)["generation"] == 0:
        admin(rollout_server, "rollout", MODEL, "--version", "2")
        admin(rollout_server, "rollback", MODEL)
    route = followed_route(rollout_server)
    assert (route["stable_version"], route["canary_version"], route["generation"] > 0) == (1, None, True)
    return rollout_server


@pytest.fixture(scope="module")
def version_2_image(version_2_checkpoint: Path) -> np.ndarray:
    """What version 2 must serve for SMALL and SEED: diffusers on the version 2 checkpoint."""
    from diffusers import FluxPipeline

    pipeline = FluxPipeline.from_pretrained(version_2_checkpoint)
    images: np.ndarray = pipeline(
        prompt=PROMPT,
        width=256,
        height=256,
        num_inference_steps=2,
        guidance_scale=0.0,
        max_sequence_length=256,
        latents=torch.from_numpy(initial_latents([SEED], 256, 256)),
        output_type="np",
    ).images
    return images


def generate(server: Server) -> tuple[httpx.Response, str]:
    """One SMALL image at SEED: the response and the version that served it."""
    response = post(server, {**SMALL, "seed": SEED})
    assert response.status_code == 200, response.text
    return response, response.headers["X-Model-Version"]


def admin(server: Server, *args: str) -> str:
    return imagegen(server, *args, "--url", server.root, "--key", API_KEY)


def followed_route(server: Server) -> dict[str, Any]:
    """The pipeline's route (stable and canary version, generation: 0 before any switch), as the
    server's frontend follows it (`GET /v1/admin/status`)."""
    response = httpx.get(f"{server.base_url}/admin/status", headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    (frontend,) = response.json()["frontends"]
    route: dict[str, Any] = frontend["serving"][MODEL]
    return route


def ready(server: Server) -> bool:
    return httpx.get(f"{server.root}/readyz", timeout=60).status_code == 200


def loaded_versions(server: Server) -> set[int]:
    """Versions of the pipeline's denoiser loaded in the embedded Triton."""
    url = f"http://{embedded_triton_url(server)}/v2/repository/index"
    index = httpx.post(url, json={}, headers={SECRET_HEADER: embedded_triton_secret(server)}).json()
    return {int(e["version"]) for e in index if e["name"] == f"{MODEL}_transformer" and e["state"] == "READY"}


def test_rollout_and_rollback_under_load_fail_no_request_and_serve_the_new_weights(
    rollout_server: Server, version_2_image: np.ndarray
) -> None:
    before, version = generate(rollout_server)
    assert version == "1"
    assert loaded_versions(rollout_server) == {1}

    with Load([rollout_server], SMALL, CLIENTS) as load:
        load.wait_for(CLIENTS)
        out = admin(rollout_server, "rollout", MODEL, "--version", "2")
        load.wait_for(2 * CLIENTS)
    print(f"rollout: {out.strip()}; {len(load.results)} requests under load")
    assert load.statuses() == {200}
    assert load.versions() == {"1", "2"}  # requests ran on both sides of the switch
    after, version = generate(rollout_server)
    assert version == "2"
    assert_matches([np.asarray(decode(after.json()["data"][0]["b64_json"]), dtype=np.int16)], version_2_image)
    assert loaded_versions(rollout_server) == {2}  # drained, then version 1 unloaded

    with Load([rollout_server], SMALL, CLIENTS) as load:
        load.wait_for(CLIENTS)
        out = admin(rollout_server, "rollback", MODEL)
        load.wait_for(2 * CLIENTS)
    print(f"rollback: {out.strip()}; {len(load.results)} requests under load")
    assert load.statuses() == {200}
    assert load.versions() == {"1", "2"}
    again, version = generate(rollout_server)
    assert version == "1"
    assert again.json()["data"] == before.json()["data"]
    assert loaded_versions(rollout_server) == {1}


def test_a_canary_serves_its_share_of_users_each_from_one_version_until_promoted(rollout_server: Server) -> None:
    admin(rollout_server, "rollout", MODEL, "--version", "2", "--canary", str(CANARY_PERCENT))
    assert loaded_versions(rollout_server) == {1, 2}
    status = admin(rollout_server, "status")
    assert f"v2 {CANARY_PERCENT}%" in status

    bodies = [{**SMALL, "seed": SEED, "user": f"user-{i}"} for i in range(CANARY_USERS)] * 2
    with ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(functools.partial(post, rollout_server), bodies))
    assert {response.status_code for response in responses} == {200}
    versions: dict[str, set[str]] = {}
    for body, response in zip(bodies, responses, strict=True):
        versions.setdefault(body["user"], set()).add(response.headers["X-Model-Version"])
    assert all(len(served) == 1 for served in versions.values())  # each user stays on one version
    canary = sum(served == {"2"} for served in versions.values())
    print(f"canary at {CANARY_PERCENT}%: {canary} of {CANARY_USERS} users on version 2")
    assert CANARY_BOUNDS[0] <= canary <= CANARY_BOUNDS[1]
    assert len({generate(rollout_server)[1] for _ in range(6)}) == 1  # without `user`: the key stays

    admin(rollout_server, "rollout", MODEL, "--version", "2")  # promote
    assert generate(rollout_server)[1] == "2"
    assert loaded_versions(rollout_server) == {2}
    admin(rollout_server, "rollback", MODEL)
    assert generate(rollout_server)[1] == "1"


def test_a_restarted_triton_is_brought_back_to_the_routed_version(routed_rollout_server: Server) -> None:
    # Version 1 is routed while version 2 is the latest on disk: the version a restarted Triton
    # loads by itself.
    before, _ = generate(routed_rollout_server)
    os.kill(embedded_triton_pid(routed_rollout_server), signal.SIGKILL)

    def served() -> httpx.Response | None:
        response = post(routed_rollout_server, {**SMALL, "seed": SEED})
        assert response.status_code in (200, 503), response.text
        return response if response.status_code == 200 else None

    response = wait_until(served, 60, "the server serving again", interval=0.2)
    assert response.headers["X-Model-Version"] == "1"
    assert response.json()["data"] == before.json()["data"]


def test_a_version_that_was_never_exported_is_refused_and_the_stable_one_serves_on(
    rollout_server: Server,
) -> None:
    response = httpx.post(
        f"{rollout_server.base_url}/admin/models/{MODEL}/rollout", json={"version": 7}, headers=AUTH, timeout=120
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ADMIN_4220"
    assert generate(rollout_server)[1] == "1"
    assert 7 not in loaded_versions(rollout_server)


def test_admin_routes_need_the_admin_scope(rollout_server: Server) -> None:
    secret = imagegen(rollout_server, "keys", "create", "--scopes", "inference.images", "--plan", "studio")
    headers = {"Authorization": f"Bearer {secret.splitlines()[-1]}"}
    responses: list[Any] = [
        httpx.post(f"{rollout_server.base_url}/admin/models/{MODEL}/rollback", headers=headers),
        httpx.get(f"{rollout_server.base_url}/admin/status", headers=headers),
    ]
    assert [r.json()["error"]["code"] for r in responses] == ["AUTH_1015", "AUTH_1015"]


def test_a_canary_of_the_stable_version_is_a_conflict(rollout_server: Server) -> None:
    response = httpx.post(
        f"{rollout_server.base_url}/admin/models/{MODEL}/rollout",
        json={"version": 1, "canary_percent": 10},
        headers=AUTH,
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "ADMIN_4090"

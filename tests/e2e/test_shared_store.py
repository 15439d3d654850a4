"""Two `imagegen serve` replicas sharing one PostgreSQL act as one service: keys, revocations,
browser sessions and a plan's rate limit are the same whichever replica a request reaches.

The first replica runs the embedded Triton, the second uses it (`IMAGEGEN_TRITON_URL`), as replicas
share one Triton in production (docker-compose.yml)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Server, embedded_triton_secret, embedded_triton_url, imagegen, start_server, stop_server
from tests.postgres import PostgresCluster

USERNAME, PASSWORD = "alice", "correct horse battery"
GENERATE = {"prompt": "a lighthouse at night", "size": "256x256", "steps": 1}


@pytest.fixture(scope="module")
def store_url(postgres: PostgresCluster) -> str:
    return postgres.new_database()


@pytest.fixture(scope="module")
def replicas(
    model_repository: Path, store_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Server]]:
    shared = {"IMAGEGEN_STORE": store_url, "IMAGEGEN_SESSION_SECRET": "one secret for every replica"}
    first = start_server(model_repository, tmp_path_factory.mktemp("replica_a"), settings=shared)
    try:
        second = start_server(
            model_repository,
            tmp_path_factory.mktemp("replica_b"),
            settings={
                **shared,
                "IMAGEGEN_TRITON_URL": embedded_triton_url(first),
                "IMAGEGEN_TRITON_SECRET": embedded_triton_secret(first),
            },
        )
        yield [first, second]
        stop_server(second)
    finally:
        stop_server(first)


@pytest.fixture
def operator(replicas: list[Server]) -> Server:
    """A replica, whose `imagegen` admin commands go to the shared store (its IMAGEGEN_STORE)."""
    return replicas[0]


def new_key(operator: Server, plan: str) -> str:
    """A key made with `imagegen keys create`; the secret is its output's last line."""
    return imagegen(operator, "keys", "create", "--scopes", "inference.images,models.read", "--plan", plan).split()[-1]


def models(server: Server, key: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_a_key_made_with_the_cli_works_on_both_replicas_until_revoked(replicas: list[Server], operator: Server) -> None:
    secret = new_key(operator, "studio")
    assert [models(server, secret).status_code for server in replicas] == [200, 200]
    [key_id] = [line.split()[0] for line in imagegen(operator, "keys", "list").splitlines() if secret[:14] in line]
    imagegen(operator, "keys", "revoke", key_id)
    refused = [models(server, secret) for server in replicas]
    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [(401, "AUTH_1001")] * 2


def test_a_plans_rate_limit_is_counted_across_replicas(replicas: list[Server], operator: Server) -> None:
    imagegen(operator, "plans", "create", "three", "--benefits", "studio_access", "--requests-per-minute", "3")
    secret = new_key(operator, "three")
    headers = {"Authorization": f"Bearer {secret}"}
    answers = [
        httpx.post(f"{replicas[i % 2].base_url}/images/generations", json=GENERATE, headers=headers, timeout=120)
        for i in range(4)
    ]
    assert [answer.status_code for answer in answers[:3]] == [200, 200, 200], answers[-1].text
    assert (answers[3].status_code, answers[3].json()["error"]["code"]) == (429, "RATE_4290")
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60


def test_a_browser_session_made_on_one_replica_works_on_the_other(replicas: list[Server], operator: Server) -> None:
    imagegen(operator, "accounts", "create", USERNAME, "--plan", "studio", "--password-stdin", stdin=PASSWORD)
    first, second = replicas
    with httpx.Client(base_url=first.base_url, timeout=120) as browser:
        login = browser.post("/auth/login", json={"username": USERNAME, "password": PASSWORD})
        assert login.status_code == 200, login.text
        csrf = login.json()["csrf_token"]
        with httpx.Client(base_url=second.base_url, cookies=browser.cookies, timeout=120) as elsewhere:
            assert elsewhere.get("/models").status_code == 200
            generated = elsewhere.post("/images/generations", json=GENERATE, headers={"X-CSRF-Token": csrf})
            assert generated.status_code == 200, generated.text
            assert elsewhere.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        ended = browser.get("/models")
        assert (ended.status_code, ended.json()["error"]["code"]) == (401, "AUTH_1001")

"""Asynchronous jobs through HTTP (httpx: the openai SDK cannot submit them): `Prefer: respond-async`
and `:batch` answer 202 with the job and its Location; the job runs as the synchronous request
would, is cancelled, fetched once, expires, and survives the frontend that ran it being killed.

The session server serves most; the TTL and the kill need a server of their own (flux-schnell
alone), with a short result TTL and lease."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.studio_page import PASSWORD, sign_in
from tests.harness import (
    API_KEY,
    Server,
    denoised_samples,
    descendants,
    embedded_triton_secret,
    embedded_triton_url,
    imagegen,
    load,
    serving,
    start_server,
    stop_server,
    triton_paused,
    wait_until,
)
from tests.postgres import PostgresCluster

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ASYNC = {**AUTH, "Prefer": "respond-async"}
MODEL = "flux-schnell"
DENOISER = f"{MODEL}_transformer"
REQUEST = {"model": MODEL, "prompt": "a red fox under the aurora", "size": "256x256", "seed": 11, "steps": 2}
ENDED = ("succeeded", "failed", "cancelled", "expired")
SECRETS_KEY = "bS5kHqg0cCJzl8u1pHK4dW0p8ZcEvSgq3rJrI0c6Vh4="
"""The sealing key replicas on one PostgreSQL share (32 bytes, base64)."""


def submit(server: Server, body: dict[str, Any], headers: dict[str, str] = ASYNC) -> httpx.Response:
    return httpx.post(f"{server.base_url}/images/generations", json=body, headers=headers, timeout=60)


def job(server: Server, job_id: str, headers: dict[str, str] = AUTH, **params: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}/images/jobs/{job_id}", headers=headers, params=params, timeout=60)


def ended(server: Server, job_id: str, within: float = 120) -> dict[str, Any]:
    return wait_until(lambda: ended_for(server, job_id, AUTH), within, f"job {job_id} ending", interval=0.1)


def queued_jobs(server: Server) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = httpx.get(
        f"{server.base_url}/images/jobs", headers=AUTH, params={"limit": "100"}, timeout=30
    ).json()["data"]
    return listed


def test_a_job_answers_202_with_its_location_and_its_result_is_the_synchronous_image(server: Server) -> None:
    started = time.perf_counter()
    accepted = submit(server, REQUEST)
    submit_seconds = time.perf_counter() - started
    assert accepted.status_code == 202, accepted.text
    submitted = accepted.json()
    assert accepted.headers["location"] == f"/v1/images/jobs/{submitted['id']}" == submitted["links"]["self"]
    assert accepted.headers["preference-applied"] == "respond-async"
    assert submitted["status"] in ("queued", "running") and submitted["model"] == MODEL
    done = ended(server, submitted["id"])
    assert done["status"] == "succeeded" and done["progress"] == {"step": 2, "steps": 2}
    synchronous = submit(server, REQUEST, AUTH).json()
    assert [d["b64_json"] for d in done["result"]["data"]] == [d["b64_json"] for d in synchronous["data"]]
    assert done["result"]["data"][0]["seed"] == 11
    print(f"submit latency {submit_seconds * 1000:.1f} ms")


def test_an_invalid_request_is_refused_at_once_and_never_queued(server: Server) -> None:
    before = {j["id"] for j in queued_jobs(server)}
    refusals = [
        submit(server, {**REQUEST, "steps": 10_000}),
        submit(server, {**REQUEST, "model": "no-such-model"}),
        submit(server, {**REQUEST, "lora_weights": "no-such-adapter"}),
        submit(server, {"model": MODEL}),
        submit(server, {**REQUEST, "stream": True}),
        submit(server, REQUEST, {"Prefer": "respond-async"}),
    ]
    assert [r.status_code for r in refusals] == [400, 404, 404, 400, 400, 401]
    assert refusals[4].json()["error"]["param"] == "stream"
    assert all("error" in r.json() for r in refusals)
    assert {j["id"] for j in queued_jobs(server)} == before


def test_another_callers_job_is_a_404_and_listing_shows_only_ones_own(server: Server) -> None:
    secret = imagegen(server, "keys", "create", "--scopes", "inference.images", "--plan", "studio").split()[-1]
    other = {"Authorization": f"Bearer {secret}"}
    mine = submit(server, REQUEST).json()["id"]
    answers = [
        job(server, mine, other),
        httpx.post(f"{server.base_url}/images/jobs/{mine}/cancel", headers=other, timeout=30),
        httpx.get(f"{server.base_url}/images/jobs/{mine}/events", headers=other, timeout=30),
    ]
    assert [(a.status_code, a.json()["error"]["code"]) for a in answers] == [(404, "VALIDATION_4042")] * 3
    listed = httpx.get(f"{server.base_url}/images/jobs", headers=other, timeout=30).json()
    assert listed == {"object": "list", "data": [], "has_more": False, "next_cursor": None}
    assert ended(server, mine)["status"] == "succeeded"


def test_a_consumed_result_is_gone_and_the_list_pages_newest_first(server: Server) -> None:
    ids = [submit(server, {**REQUEST, "seed": seed}).json()["id"] for seed in (1, 2, 3)]
    for job_id in ids:
        ended(server, job_id)
    first = httpx.get(f"{server.base_url}/images/jobs", headers=AUTH, params={"limit": "2"}, timeout=30).json()
    second = httpx.get(
        f"{server.base_url}/images/jobs", headers=AUTH, params={"limit": "2", "after": first["next_cursor"]}, timeout=30
    ).json()
    assert [j["id"] for j in first["data"]] == ids[:0:-1] and first["has_more"]
    assert second["data"][0]["id"] == ids[0]
    consumed = job(server, ids[0], consume="true")
    assert consumed.status_code == 200 and consumed.json()["result"]["data"][0]["seed"] == 1
    assert job(server, ids[0], consume="true").status_code == 404
    assert job(server, ids[0]).status_code == 404


def test_a_cancelled_queued_job_never_runs_and_a_running_one_stops_before_its_next_step(server: Server) -> None:
    denoised = denoised_samples(server, DENOISER)
    with triton_paused(server):
        # The server's two workers each hold a job in the paused Triton; the third job stays queued.
        running = [submit(server, {**REQUEST, "steps": 4, "seed": seed}).json()["id"] for seed in (3, 4)]
        wait_until(lambda: job(server, running[0]).json()["status"] == "running", 30, "the first job running")
        queued = submit(server, {**REQUEST, "seed": 5}).json()["id"]
        cancel = [
            httpx.post(f"{server.base_url}/images/jobs/{job_id}/cancel", headers=AUTH, timeout=30).json()
            for job_id in [queued, *running]
        ]
        assert (cancel[0]["status"], cancel[0]["attempts"]) == ("cancelled", 0)
    outcomes = [ended(server, job_id) for job_id in [queued, *running]]
    assert [o["status"] for o in outcomes] == ["cancelled"] * 3 and outcomes[0]["attempts"] == 0
    # Each running job had at most one denoising call in flight when cancelled, and ran none after.
    assert denoised_samples(server, DENOISER) - denoised <= 2


def test_a_batch_model_is_a_job_at_the_plans_batch_price(server: Server) -> None:
    imagegen(server, "plans", "create", "bulk", "--benefits", "studio_access", "--batch-discount", "0.5")
    imagegen(server, "plans", "price", "bulk", "--per-megapixel-step", "2")
    secret = imagegen(server, "keys", "create", "--scopes", "inference.images", "--plan", "bulk").split()[-1]
    key = {"Authorization": f"Bearer {secret}"}
    synchronous = submit(server, REQUEST, key).json()
    accepted = submit(server, {**REQUEST, "model": f"{MODEL}:batch"}, key)  # no Prefer header: the flavour is a job
    assert accepted.status_code == 202 and accepted.json()["model"] == f"{MODEL}:batch"
    done = wait_until(lambda: ended_for(server, accepted.json()["id"], key), 120, "the batch job ending", 0.1)
    assert done["result"]["credits_cost"] == synchronous["credits_cost"] / 2 > 0
    assert done["result"]["data"][0]["b64_json"] == synchronous["data"][0]["b64_json"]


def ended_for(server: Server, job_id: str, headers: dict[str, str]) -> dict[str, Any] | None:
    body: dict[str, Any] = job(server, job_id, headers).json()
    return body if body["status"] in ENDED else None


SUBMIT_FROM_THE_PAGE = """async (body) => {
  const csrf = decodeURIComponent(document.cookie.split("; ").find((c) => c.startsWith("imagegen_csrf=")).slice(14));
  const headers = {"Content-Type": "application/json", "Prefer": "respond-async", "X-CSRF-Token": csrf};
  const response = await fetch("/v1/images/generations", {method: "POST", headers, body: JSON.stringify(body)});
  return (await response.json()).id;
}"""
"""A job submitted with the page's own session (its cookie and CSRF token), as a script of the Studio's would."""


def test_the_studio_shows_the_accounts_jobs_live_and_cancels_one(page: Page, server: Server) -> None:
    imagegen(server, "accounts", "create", "jobs-user", "--plan", "studio", "--password-stdin", stdin=PASSWORD)
    sign_in(page, server, "jobs-user")
    rows = page.locator("#jobs-list tr")
    with triton_paused(server):
        job_id = page.evaluate(SUBMIT_FROM_THE_PAGE, {**REQUEST, "steps": 4})
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(re.compile("queued|running"))
        rows.first.get_by_role("button", name="Cancel").click()
        expect(rows.first).to_contain_text("cancelled")
    assert rows.first.get_attribute("data-job") == job_id
    expect(rows.first.get_by_role("button", name="Cancel")).to_have_count(0)


def test_the_store_holds_neither_the_prompt_nor_the_image_in_clear(server: Server) -> None:
    prompt = "a secret prompt about a violet giraffe"
    with triton_paused(server):  # before the submission: the job is held running however fast the machine
        job_id = submit(server, {**REQUEST, "prompt": prompt}).json()["id"]
        wait_until(lambda: job(server, job_id).json()["status"] == "running", 30, "the job running")
        assert_store_holds_none_of(server, [prompt.encode()])
    done = ended(server, job_id)
    image = done["result"]["data"][0]["b64_json"]
    assert_store_holds_none_of(server, [prompt.encode(), image[:64].encode(), image[-64:].encode()])


def assert_store_holds_none_of(server: Server, needles: list[bytes]) -> None:
    path = server.state_dir / "imagegen.db"
    with sqlite3.connect(path) as connection:  # fold the write-ahead log into the file
        connection.execute("PRAGMA wal_checkpoint(FULL)")
    for suffix in ("", "-wal"):
        companion = path.with_name(path.name + suffix)
        data = companion.read_bytes() if companion.exists() else b""
        assert not [needle for needle in needles if needle in data], companion


@pytest.fixture(scope="module")
def brief_server(schnell_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Results kept 2 s, and one running slot per model."""
    settings = {
        "IMAGEGEN_JOB_RESULT_TTL": "2",
        "IMAGEGEN_RUNNING_PER_MODEL": "1",
        "IMAGEGEN_REQUESTS_PER_MINUTE": "1000",
    }
    with serving(schnell_repository, tmp_path_factory.mktemp("jobs"), settings=settings) as running:
        yield running


def test_a_result_not_fetched_within_its_ttl_expires(brief_server: Server) -> None:
    job_id = submit(brief_server, REQUEST).json()["id"]
    wait_until(lambda: job(brief_server, job_id).json()["status"] == "expired", 60, "the result expiring")
    expired = job(brief_server, job_id).json()
    assert "result" not in expired
    assert job(brief_server, job_id, consume="true").status_code == 404


def test_an_interactive_request_takes_a_freed_slot_before_a_queued_job(brief_server: Server) -> None:
    server = brief_server
    with ThreadPoolExecutor(1) as client:
        with triton_paused(server):
            first, queued = [submit(server, {**REQUEST, "seed": seed}).json()["id"] for seed in (7, 8)]
            wait_until(lambda: load(server, MODEL)["running"] == 1, 30, "the first job holding the one slot")
            interactive = client.submit(submit, server, REQUEST, AUTH)
            wait_until(lambda: load(server, MODEL)["queued"] == 1, 30, "the request waiting for the slot")
            httpx.post(f"{server.base_url}/images/jobs/{first}/cancel", headers=AUTH, timeout=30)
            wait_until(lambda: job(server, first).json()["status"] == "cancelled", 30, "the first job cancelled")
            assert load(server, MODEL) == {"running": 1, "queued": 0}  # the request holds the slot
            assert job(server, queued).json()["status"] == "queued"
        assert interactive.result().status_code == 200
    assert ended(server, queued)["status"] == "succeeded"


def test_two_frontends_on_one_postgresql_drain_one_queue_running_each_job_once(
    schnell_repository: Path, postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shared = {
        "IMAGEGEN_STORE": postgres.new_database(),
        "IMAGEGEN_SECRETS_KEY": SECRETS_KEY,
        "IMAGEGEN_REQUESTS_PER_MINUTE": "1000",
    }
    first = start_server(schnell_repository, tmp_path_factory.mktemp("replica_a"), settings=shared)
    try:
        triton = {
            "IMAGEGEN_TRITON_URL": embedded_triton_url(first),
            "IMAGEGEN_TRITON_SECRET": embedded_triton_secret(first),
        }
        second = start_server(schnell_repository, tmp_path_factory.mktemp("replica_b"), settings={**shared, **triton})
        try:
            replicas = [first, second]
            ids = [submit(replicas[i % 2], {**REQUEST, "steps": 1, "seed": i}).json()["id"] for i in range(50)]
            outcomes = [ended(replicas[i % 2], job_id) for i, job_id in enumerate(ids)]
            assert {(o["status"], o["attempts"]) for o in outcomes} == {("succeeded", 1)}
            assert denoised_samples(first, DENOISER) == 50  # one step each, and no job run twice
            assert all(steps_run(replica) > 0 for replica in replicas)  # both drained the queue
        finally:
            stop_server(second)
    finally:
        stop_server(first)


def steps_run(server: Server) -> float:
    exposition = httpx.get(f"{server.root}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1]) for line in exposition.splitlines() if line.startswith("imagegen_denoise_steps_total")
    )


def test_jobs_of_a_frontend_killed_mid_job_all_succeed_after_a_restart_each_run_once(
    schnell_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    state, settings = tmp_path_factory.mktemp("killed"), {"IMAGEGEN_JOB_LEASE": "2"}
    first = start_server(schnell_repository, state, settings=settings)
    try:
        with triton_paused(first):
            # Two held by the two workers in the paused Triton, two queued behind them.
            ids = [submit(first, {**REQUEST, "steps": 3, "seed": seed}).json()["id"] for seed in range(4)]
            wait_until(lambda: job(first, ids[1]).json()["status"] == "running", 30, "two jobs running")
            killed_at = kill(first)
    finally:
        kill(first)
    with serving(schnell_repository, state, settings=settings) as second:
        restarted_at = time.time()
        outcomes = [ended(second, job_id) for job_id in ids]
        assert [(o["status"], o["attempts"]) for o in outcomes] == [("succeeded", 2)] * 2 + [("succeeded", 1)] * 2
        assert denoised_samples(second, DENOISER) == 4 * 3  # each run once here, whole
    print(
        f"restarted {restarted_at - killed_at:.1f} s after the kill; all ended {time.time() - restarted_at:.1f} s later"
    )


def kill(server: Server) -> float:
    """SIGKILL the frontend and everything it started (its Triton), as a crash would; when."""
    for pid in [server.process.pid, *descendants(server.process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.process.wait()
    for region in Path("/dev/shm").glob(f"triton_embedded_{server.process.pid}_*"):
        region.unlink(missing_ok=True)
    return time.time()

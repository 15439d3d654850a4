"""Webhook deliveries to a real receiver over a socket: signed as Standard Webhooks specify, retried,
kept across a restart, sent once by frontends sharing a store, refused where the policy says.

The delivery service is driven through its own API on a store of each test's; a job's webhook and the
400s of refused URLs go through the session server (which allows 127.0.0.1 and `*.example.com`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from standardwebhooks import Webhook

from frontend.errors import InvalidParameter
from frontend.sealing import Sealer, new_key
from frontend.store import Store, connect
from frontend.store.sqlite import COMPANION_SUFFIXES
from frontend.store.webhooks import DeliveryRecord
from frontend.webhook_targets import WebhookTargets
from frontend.webhooks import DeliveryPolicy, Webhooks, replace_secret
from tests.harness import API_KEY, Server, imagegen, wait_until

T = TypeVar("T")
PRINCIPAL = "key_webhooks"
PAYLOAD = {"id": "job_1", "object": "image.job", "status": "succeeded"}
FAST = DeliveryPolicy(attempts=3, retry_seconds=0.05, timeout=5.0)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that answers each POST with the next of `answers` (200 once they
    run out) and records what arrived."""

    answers: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/imagegen?source=test"


@contextlib.contextmanager
def receiving(answers: list[int] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(list(answers or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            receiver.received.append(({name.lower(): value for name, value in self.headers.items()}, body))
            status = receiver.answers.pop(0) if receiver.answers else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("location", "/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


async def eventually(check: Callable[[], Awaitable[T | None]], within: float = 15.0) -> T:
    """Poll `check` until it returns something, the way a test waits for a state it cannot be told of."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within} s")


def ended(store: Store, job_id: str) -> Callable[[], Awaitable[DeliveryRecord | None]]:
    async def check() -> DeliveryRecord | None:
        records = await store.webhook_deliveries.listed(job_id=job_id)
        return records[0] if records and records[0].status != "pending" else None

    return check


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(base64.b64decode(new_key()))


@contextlib.asynccontextmanager
async def delivering(webhooks: Webhooks) -> AsyncIterator[None]:
    """The service's loop for the block, as the app's lifespan runs it."""
    task = asyncio.create_task(webhooks.deliver_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def service(
    store: Store, sealer: Sealer, policy: DeliveryPolicy = FAST, allowed: tuple[str, ...] = ("127.0.0.1",)
) -> Webhooks:
    return Webhooks(store, sealer, WebhookTargets(allowed), policy)


@dataclass(frozen=True)
class Delivered:
    record: DeliveryRecord
    received: list[tuple[dict[str, str], bytes]]
    """The receiver's requests: headers (lower-case names) and body."""
    secret: str


def deliver_one(store_file: Path, sealer: Sealer, answers: list[int]) -> Delivered:
    """One job's delivery to a receiver answering `answers` (then 200), until it ends."""

    async def scenario() -> Delivered:
        store = await connect(str(store_file))
        secret = await replace_secret(store, sealer, PRINCIPAL)
        webhooks = service(store, sealer)
        with receiving(answers) as receiver:
            async with delivering(webhooks):
                url = await webhooks.check_url(PRINCIPAL, receiver.url)
                await webhooks.enqueue(PRINCIPAL, "job_1", url, "image.job.succeeded", PAYLOAD)
                record = await eventually(ended(store, "job_1"))
        store.close()
        return Delivered(record, receiver.received, secret)

    return asyncio.run(scenario())


def test_a_delivery_arrives_signed_and_verifies_with_standard_webhooks(tmp_path: Path, sealer: Sealer) -> None:
    delivered = deliver_one(tmp_path / "imagegen.db", sealer, [])
    [(headers, body)] = delivered.received
    event = Webhook(delivered.secret).verify(body, headers)
    assert event["type"] == "image.job.succeeded"
    assert event["data"] == PAYLOAD
    assert headers["webhook-id"] == delivered.record.id
    assert headers["content-type"] == "application/json"
    assert (delivered.record.status, [a.response_status for a in delivered.record.attempts]) == ("delivered", [200])
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(delivered.secret).verify(body.replace(b"succeeded", b"failed"), headers)


def test_a_receiver_that_fails_twice_gets_the_third_attempt_every_attempt_recorded(
    tmp_path: Path, sealer: Sealer
) -> None:
    delivered = deliver_one(tmp_path / "imagegen.db", sealer, [500, 503])
    assert delivered.record.status == "delivered"
    assert [(a.number, a.response_status, a.error) for a in delivered.record.attempts] == [
        (1, 500, "answered 500"),
        (2, 503, "answered 503"),
        (3, 200, None),
    ]
    # One message, one id: a receiver can drop a repeat; each attempt signed afresh.
    assert len({headers["webhook-id"] for headers, _ in delivered.received}) == 1
    Webhook(delivered.secret).verify(delivered.received[-1][1], delivered.received[-1][0])


def test_a_delivery_failing_every_attempt_ends_failed_and_a_redirect_is_not_followed(
    tmp_path: Path, sealer: Sealer
) -> None:
    delivered = deliver_one(tmp_path / "imagegen.db", sealer, [302, 500, 500])
    assert delivered.record.status == "failed"
    assert [a.response_status for a in delivered.record.attempts] == [302, 500, 500]
    assert delivered.record.attempts[0].error == "answered 302 (redirects are not followed)"
    assert len(delivered.received) == 3  # nothing went to /elsewhere


def test_a_pending_delivery_survives_a_restart(tmp_path: Path, sealer: Sealer) -> None:
    """The first frontend's attempt fails and it stops; the one started next on the same store sends
    the retry when it is due."""

    async def scenario() -> None:
        location = str(tmp_path / "imagegen.db")
        slow_retry = DeliveryPolicy(attempts=3, retry_seconds=0.5, timeout=5.0)
        with receiving([500]) as receiver:
            store = await connect(location)
            await replace_secret(store, sealer, PRINCIPAL)
            first = service(store, sealer, slow_retry)
            async with delivering(first):
                await first.enqueue(PRINCIPAL, "job_1", receiver.url, "image.job.succeeded", PAYLOAD)
                await eventually(lambda: asyncio.sleep(0, result=receiver.received))
            [pending] = await store.webhook_deliveries.listed(job_id="job_1")
            store.close()
            assert (pending.status, len(pending.attempts)) == ("pending", 1)

            store = await connect(location)
            async with delivering(service(store, sealer, slow_retry)):
                record = await eventually(ended(store, "job_1"))
            store.close()
        assert [a.response_status for a in record.attempts] == [500, 200]

    asyncio.run(scenario())


def test_frontends_sharing_a_store_send_each_delivery_once(store_location: str, sealer: Sealer) -> None:
    async def scenario() -> None:
        stores = [await connect(store_location) for _ in range(3)]
        await replace_secret(stores[0], sealer, PRINCIPAL)
        services = [service(store, sealer) for store in stores]
        with receiving() as receiver:
            async with contextlib.AsyncExitStack() as running:
                for webhooks in services:
                    await running.enter_async_context(delivering(webhooks))
                for number in range(24):
                    await services[number % 3].enqueue(PRINCIPAL, f"job_{number}", receiver.url, "t", PAYLOAD)
                for number in range(24):
                    await eventually(ended(stores[0], f"job_{number}"))
        for store in stores:
            store.close()
        ids = [headers["webhook-id"] for headers, _ in receiver.received]
        assert len(ids) == len(set(ids)) == 24

    asyncio.run(scenario())


def test_a_target_refused_at_delivery_fails_at_once(tmp_path: Path, sealer: Sealer) -> None:
    """Checked again when sent: a host taken off the list, or a name that now resolves to a refused
    address (DNS rebinding: `localhost` stands for a name an attacker points at 127.0.0.1)."""

    async def scenario() -> None:
        store = await connect(str(tmp_path / "imagegen.db"))
        await replace_secret(store, sealer, PRINCIPAL)
        webhooks = service(store, sealer, allowed=("*",))
        with receiving() as receiver:
            async with delivering(webhooks):
                await webhooks.enqueue(PRINCIPAL, "job_1", receiver.url, "t", PAYLOAD)
                await webhooks.enqueue(PRINCIPAL, "job_2", f"https://localhost:{receiver.port}/", "t", PAYLOAD)
                off_list, rebound = await eventually(ended(store, "job_1")), await eventually(ended(store, "job_2"))
        store.close()
        assert receiver.received == []
        assert (off_list.status, len(off_list.attempts)) == ("failed", 1)
        assert "must use https" in str(off_list.attempts[0].error)
        assert "'localhost' resolves to a loopback address" in str(rebound.attempts[0].error)

    asyncio.run(scenario())


def test_a_webhook_url_needs_a_secret_to_sign_with(tmp_path: Path, sealer: Sealer) -> None:
    async def scenario() -> None:
        store = await connect(str(tmp_path / "imagegen.db"))
        with pytest.raises(InvalidParameter, match="no webhook secret") as refused:
            await service(store, sealer).check_url("key_without_secret", "http://127.0.0.1:9/")
        assert refused.value.param == "webhook_url"
        store.close()

    asyncio.run(scenario())


def test_a_copy_of_the_database_reveals_no_secret_target_or_body(tmp_path: Path, sealer: Sealer) -> None:
    async def scenario() -> str:
        store = await connect(str(tmp_path / "imagegen.db"))
        secret = await replace_secret(store, sealer, PRINCIPAL)
        await service(store, sealer).enqueue(
            PRINCIPAL, "job_1", "https://hooks.example.com/t0ken-in-path", "t", {"revealing": "marker"}
        )
        store.close()
        return secret

    secret = asyncio.run(scenario())
    copied = b"".join(
        path.read_bytes() for suffix in COMPANION_SUFFIXES if (path := tmp_path / f"imagegen.db{suffix}").exists()
    )
    assert PRINCIPAL.encode() in copied  # the copy holds the rows
    for revealing in (secret.encode(), secret.removeprefix("whsec_").encode(), b"t0ken-in-path", b"marker"):
        assert revealing not in copied


@pytest.fixture(scope="module")
def webhook_key(server: Server) -> tuple[str, str]:
    """A key of the session server's with a webhook secret: (its API secret, its `whsec_` secret)."""
    created = imagegen(server, "keys", "create", "--scopes", "inference.images", "--plan", "studio", "--name", "hooks")
    key_id, api_secret = created.split()[1], created.splitlines()[-1]
    return api_secret, imagegen(server, "webhooks", "secret", key_id).splitlines()[-1]


def submit_job(server: Server, api_secret: str, webhook_url: str) -> httpx.Response:
    body = {
        "model": "flux-schnell",
        "prompt": "a kingfisher",
        "size": "256x256",
        "steps": 2,
        "webhook_url": webhook_url,
    }
    headers = {"Authorization": f"Bearer {api_secret}", "Prefer": "respond-async"}
    return httpx.post(f"{server.base_url}/images/generations", json=body, headers=headers, timeout=60)


def test_a_job_with_a_webhook_url_calls_the_receiver_with_the_signed_job(
    server: Server, webhook_key: tuple[str, str]
) -> None:
    api_secret, secret = webhook_key
    with receiving() as receiver:
        accepted = submit_job(server, api_secret, receiver.url)
        assert accepted.status_code == 202, accepted.text
        wait_until(lambda: receiver.received, 120, "the job's webhook")
    [(headers, body)] = receiver.received
    event = Webhook(secret).verify(body, headers)
    assert event["type"] == "image.job.succeeded"
    assert event["data"]["id"] == accepted.json()["id"]
    assert event["data"]["status"] == "succeeded"
    assert b"b64_json" not in body  # the job, not its images: the receiver fetches those
    # The operator sees the delivery and its answer; /metrics counts it.
    listed = wait_until(lambda: delivered_line(server, event["data"]["id"]), 30, "the delivery recorded")
    assert "127.0.0.1" in listed and " 200 " in listed
    metrics = httpx.get(f"{server.root}/metrics", timeout=30).text
    assert 'imagegen_webhook_attempts_total{outcome="delivered"}' in metrics


def delivered_line(server: Server, job_id: str) -> str:
    """`imagegen webhooks list`'s line of the job's delivery once delivered; empty before."""
    lines = imagegen(server, "webhooks", "list", "--job", job_id).splitlines()[1:]
    return next((line for line in lines if "delivered" in line), "")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:9/hook", "not among this server's allowed webhook hosts"),  # loopback, not named
        ("https://10.0.0.1/hook", "not among this server's allowed webhook hosts"),  # private, not named
        ("https://hooks.example.net/hook", "not among this server's allowed webhook hosts"),
        ("http://hooks.example.com/hook", "must use https"),  # a pattern's host
        ("https://[::ffff:127.0.0.1]/hook", "not among this server's allowed webhook hosts"),
        ("https://hooks.example.com/" + "a" * 2048, "2048"),
    ],
)
def test_a_refused_webhook_url_is_a_400_naming_it_and_queues_nothing(
    server: Server, webhook_key: tuple[str, str], url: str, reason: str
) -> None:
    api_secret, _ = webhook_key
    listed = {"Authorization": f"Bearer {api_secret}"}
    before = httpx.get(f"{server.base_url}/images/jobs", headers=listed, timeout=30).json()["data"]
    refused = submit_job(server, api_secret, url)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["param"], error["code"]) == ("webhook_url", "VALIDATION_4004")
    assert reason in error["message"]
    assert httpx.get(f"{server.base_url}/images/jobs", headers=listed, timeout=30).json()["data"] == before


def test_a_webhook_url_of_a_key_without_a_secret_is_a_400(server: Server) -> None:
    refused = submit_job(server, API_KEY, "http://127.0.0.1:9/hook")
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "webhook_url"
    assert "no webhook secret" in refused.json()["error"]["message"]

"""Webhooks: a job's completion POSTed to the URL its submitter named, signed as Standard Webhooks
specify (`webhook-id`, `webhook-timestamp`, `webhook-signature`: HMAC-SHA256 with the key's or
account's `whsec_` secret, which `imagegen webhooks secret` makes and shows once).

A submission checks its `webhook_url` (`check_url`, frontend/webhook_targets.py says what is
refused); the job's completion records a delivery in the store (`enqueue`), and each frontend's
background loop (`delivering`, in the app's lifespan) claims due deliveries and sends them. A
delivery that fails (no answer, or not a 2xx: redirects are not followed) is retried with the delay
doubling each time, up to `IMAGEGEN_WEBHOOK_ATTEMPTS`, every attempt recorded; one the policy refuses
at send time (the operator took its host off the list, or it now resolves to a refused address)
fails at once. Deliveries live in the store, so a restarted or another frontend sends what is pending.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from frontend.errors import InvalidParameter
from frontend.sealing import Sealer, SealError
from frontend.settings import Settings
from frontend.store import Store
from frontend.store.webhooks import DELIVERED, FAILED, PENDING, Attempt, ClaimedDelivery, NewDelivery
from frontend.webhook_targets import RESOLVE_TIMEOUT_S, IPAddress, Target, TargetRefused, WebhookTargets

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
"""A delivery's body: a job object without its images (the receiver fetches those)."""
MAX_RESPONSE_BYTES = 64 * 1024
"""Read of a receiver's answer (then dropped): its status is all a delivery needs."""
CLAIM_BATCH = 8
"""Deliveries a frontend claims and sends at once."""
POLL_SECONDS = 1.0
"""How often a frontend looks for deliveries due that it did not enqueue (a retry, another
frontend's, one left by a restart)."""
SECRET_BYTES = 32


@dataclass(frozen=True)
class DeliveryPolicy:
    attempts: int
    """Attempts per delivery, the first included."""
    retry_seconds: float
    """Delay before the first retry; each further one doubles it."""
    timeout: float
    """Seconds one attempt may take, from connecting to the answer's status."""

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds a delivery: longer than any attempt (resolving, then sending)."""
        return RESOLVE_TIMEOUT_S + self.timeout + 30.0

    def retry_delay(self, attempts_made: int) -> float:
        return self.retry_seconds * 2.0 ** (attempts_made - 1)


class DeliveryRefused(Exception):
    """A delivery that no retry can send: its target refused, its secret or message unreadable."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


async def replace_secret(store: Store, sealer: Sealer, principal: str) -> str:
    """A new signing secret for `principal` (a key's or account's id), replacing any it had: returned
    once, stored sealed."""
    secret = new_secret()
    await store.webhook_secrets.replace(
        principal, sealer.seal(secret.encode(), _secret_context(principal)), time.time()
    )
    return secret


class Webhooks:
    """The service: URL checks for submissions, deliveries for completions, and the sending loop."""

    def __init__(
        self,
        store: Store,
        sealer: Sealer,
        targets: WebhookTargets,
        policy: DeliveryPolicy,
        observe: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._targets = targets
        self._policy = policy
        self._observe = observe
        """Told each attempt's outcome (`delivered`, `retrying`, `failed`): the metrics."""
        self._due = asyncio.Event()

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store, sealer: Sealer, observe: Callable[[str], None] = lambda outcome: None
    ) -> Webhooks:
        policy = DeliveryPolicy(settings.webhook_attempts, settings.webhook_retry_seconds, settings.webhook_timeout)
        return cls(store, sealer, WebhookTargets(settings.webhook_allowed_hosts), policy, observe)

    async def check_url(self, principal: str, url: str) -> str:
        """The URL a submission names, if a job of `principal`'s may call it back there; else
        InvalidParameter on `webhook_url` (a 400, before anything is queued)."""
        try:
            target = await self._targets.check(url)
        except TargetRefused as exc:
            raise InvalidParameter(str(exc), param="webhook_url") from None
        if await self._store.webhook_secrets.sealed(principal) is None:
            raise InvalidParameter(
                "These credentials have no webhook secret to sign deliveries with: the operator makes one "
                "with `imagegen webhooks secret`.",
                param="webhook_url",
            )
        return target.url

    async def enqueue(self, principal: str, job_id: str, url: str, event_type: str, payload: dict[str, Any]) -> str:
        """Record a delivery of `payload` (a JSON object) to `url`, sent by the next free loop of any
        frontend; its id, the `webhook-id` of every attempt. The body is Standard Webhooks' envelope:
        `{"type": event_type, "timestamp": ..., "data": payload}`."""
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = json.dumps({"type": event_type, "timestamp": stamp, "data": payload}, separators=(",", ":"))
        if len(body.encode()) > MAX_BODY_BYTES:
            raise ValueError(f"a webhook body is at most {MAX_BODY_BYTES} bytes: send the job, not its images")
        delivery_id = f"msg_{secrets.token_urlsafe(18)}"
        message = json.dumps({"url": url, "body": body}).encode()
        sealed = self._sealer.seal(message, _message_context(delivery_id))
        host = urlsplit(url).hostname or ""
        await self._store.webhook_deliveries.add(
            NewDelivery(delivery_id, principal, job_id, event_type, host, sealed, now)
        )
        self._due.set()
        return delivery_id

    async def deliver_forever(self) -> None:
        """Send due deliveries until cancelled: a task of the app's lifespan. A delivery cut short by
        the stop is sent again once its claim's lease ends, with the same `webhook-id`."""
        # No connection is kept for another attempt: a pooled one is keyed by address, and would carry
        # a request for one host over TLS checked for another that shares the address.
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=self._policy.timeout, limits=fresh
        ) as client:
            while True:
                self._due.clear()  # before claiming: an enqueue from here on wakes the wait below
                try:
                    next_due = await self._deliver_due(client)
                except Exception:
                    log.exception("webhook deliveries not sent; retrying in %g s", POLL_SECONDS)
                    next_due = None
                delay = POLL_SECONDS if next_due is None else min(max(next_due - time.time(), 0.0), POLL_SECONDS)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._due.wait()

    async def _deliver_due(self, client: httpx.AsyncClient) -> float | None:
        """Claim and send the deliveries due now; when the next one is due (now, when a full batch was
        claimed: more may wait), None when none is pending."""
        claim = secrets.token_urlsafe(12)
        claimed, next_due = await self._store.webhook_deliveries.claim(
            claim, time.time(), self._policy.lease_seconds, CLAIM_BATCH
        )
        await asyncio.gather(*(self._attempt(client, delivery) for delivery in claimed))
        return time.time() if len(claimed) == CLAIM_BATCH else next_due

    async def _attempt(self, client: httpx.AsyncClient, delivery: ClaimedDelivery) -> None:
        started, clock = time.time(), time.monotonic()
        number = delivery.attempts + 1
        status: int | None = None
        error: str | None = None
        refused = False
        try:
            status = await self._send(client, delivery)
            if not 200 <= status < 300:
                error = f"answered {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except DeliveryRefused as exc:
            error, refused = str(exc), True
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            error = _describe(exc)
        if error is None:
            outcome, due_at = DELIVERED, None
        elif refused or number >= self._policy.attempts:
            outcome, due_at = FAILED, None
        else:
            outcome, due_at = PENDING, time.time() + self._policy.retry_delay(number)
        attempt = Attempt(number, started, (time.monotonic() - clock) * 1000, status, error)
        if not await self._store.webhook_deliveries.record(delivery, attempt, outcome, due_at):
            log.warning("webhook delivery %s: its claim lapsed; another frontend sends it", delivery.id)
            return
        self._observe("retrying" if outcome == PENDING else outcome)
        log.log(
            logging.INFO if error is None else logging.WARNING,
            "webhook delivery %s of job %s, attempt %d: %s",
            delivery.id,
            delivery.job_id,
            number,
            error or f"delivered ({status})",
        )

    async def _send(self, client: httpx.AsyncClient, delivery: ClaimedDelivery) -> int:
        """POST the delivery, signed; the receiver's status."""
        try:
            message = json.loads(self._sealer.unseal(delivery.message, _message_context(delivery.id)))
        except SealError as exc:
            raise DeliveryRefused(f"its message does not open: {exc}") from None
        secret = await self._secret(delivery.principal)
        try:
            target = self._targets.parse(message["url"])
            addresses = await self._targets.addresses(target)
        except TargetRefused as exc:
            raise DeliveryRefused(str(exc)) from None
        body: str = message["body"]
        timestamp = int(time.time())
        signature = Webhook(secret).sign(delivery.id, datetime.fromtimestamp(timestamp, UTC), body)
        headers = {
            "content-type": "application/json",
            "user-agent": "imagegen-webhooks",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        return await self._post(client, target, addresses, headers, body.encode())

    async def _secret(self, principal: str) -> str:
        sealed = await self._store.webhook_secrets.sealed(principal)
        if sealed is None:
            raise DeliveryRefused("its key or account has no webhook secret")
        try:
            return self._sealer.unseal(sealed, _secret_context(principal)).decode()
        except SealError as exc:
            raise DeliveryRefused(f"its webhook secret does not open: {exc}") from None

    async def _post(
        self,
        client: httpx.AsyncClient,
        target: Target,
        addresses: list[IPAddress],
        headers: dict[str, str],
        body: bytes,
    ) -> int:
        """POST to the first of the checked `addresses` that accepts a connection, naming the host in
        `Host` and in TLS (SNI, and the certificate checked against it); never resolving it again."""
        failure: httpx.ConnectError | None = None
        for address in addresses:
            host = f"[{address}]" if address.version == 6 else str(address)
            url = f"{target.scheme}://{host}:{target.port}{target.path}"
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            try:
                async with asyncio.timeout(self._policy.timeout):
                    async with client.stream(
                        "POST",
                        url,
                        content=body,
                        headers={**headers, "host": target.host_header},
                        extensions=extensions,
                    ) as response:
                        read = 0
                        async for chunk in response.aiter_raw():
                            read += len(chunk)
                            if read >= MAX_RESPONSE_BYTES:
                                break
                        return response.status_code
            except httpx.ConnectError as exc:
                failure = exc
        if failure is None:
            raise DeliveryRefused("its host resolves to no address")
        raise failure


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _secret_context(principal: str) -> str:
    return f"webhook-secret:{principal}"


def _message_context(delivery_id: str) -> str:
    return f"webhook-delivery:{delivery_id}"

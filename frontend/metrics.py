"""The frontend's Prometheus metrics, served at `/metrics` (README, Observability).

Per generation request, counted once where it ends, from its ledger row (`accounting.py`): requests
by model, status and error code, latency, denoising steps, images, energy, credits and Triton time.
Queue depth and running generations are read from `admission.py` at scrape time, never counted
twice. Every HTTP answer is counted by method, route template and status (`api/request_ids.py`), so
refusals before a request reaches the ledger (401, 403, a key's 429) show too.

Each app has a registry of its own, not prometheus_client's global one, so one process (a test)
can build several apps. Labels come from the server's own names, never from what a client sent: a
request whose model was not resolved has `model=""`, one that matched no route `route="unmatched"`,
a method HTTP does not define `method="OTHER"`. Every label is then one of a fixed set: the
catalog's models, the routes, the error codes, the HTTP statuses and methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from frontend.admission import Admission
from frontend.store.ledger import UsageRecord
from frontend.triton_pool import TritonPool

# `*_created` series, one per counter and label set, that no query here needs. The function has no
# annotations in prometheus_client.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
"""RFC 9110's methods and PATCH; the server accepts any token as a method, and each would be a series."""
OTHER_METHOD = "OTHER"

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
"""Seconds: a refused request (tens of ms) up to a large FLUX.1-dev batch on a busy GPU."""


class AdmissionCollector(Collector):
    """Each model's generations running and waiting, as `/readyz` reports them, at scrape time."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def collect(self) -> Iterable[Metric]:
        queued = GaugeMetricFamily("imagegen_queue_depth", "Generations waiting for a slot", labels=["model"])
        running = GaugeMetricFamily("imagegen_running", "Generations running", labels=["model"])
        for model, load in self.admission.load().items():
            queued.add_metric([model], load["queued"])
            running.add_metric([model], load["running"])
        return [queued, running]


class PoolCollector(Collector):
    """Per Triton server of the pool, at scrape time: requests sent to it, in flight, failed, and
    whether it answers. Labelled by its `host:port`; a server that leaves the pool leaves the
    exposition, so the label's values are the pool's members."""

    def __init__(self, pool: TritonPool) -> None:
        self.pool = pool

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "imagegen_triton_server_requests", "Requests sent to each Triton server", labels=["server"]
        )
        errors = CounterMetricFamily(
            "imagegen_triton_server_errors",
            "Requests that failed on each Triton server (unreachable, stalled or an inference error)",
            labels=["server"],
        )
        in_flight = GaugeMetricFamily("imagegen_triton_server_in_flight", "Requests running", labels=["server"])
        up = GaugeMetricFamily("imagegen_triton_server_up", "1 while the server answers its probes", labels=["server"])
        for server in self.pool.ordered():
            requests.add_metric([server.url], server.requests)
            errors.add_metric([server.url], server.errors)
            in_flight.add_metric([server.url], server.in_flight)
            up.add_metric([server.url], int(server.reachable))
        return [requests, errors, in_flight, up]


class Metrics:
    def __init__(self, admission: Admission) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imagegen_requests",
            "Generation requests by model, HTTP status and error code",
            ["model", "status", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "imagegen_request_duration_seconds",
            "Generation request latency, queueing included",
            ["model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.steps = self._per_model("imagegen_denoise_steps", "Denoising steps run (one batched call each)")
        self.images = self._per_model("imagegen_images", "Images returned")
        self.energy = self._per_model("imagegen_energy_kwh", "Energy of the requests, as energy_cost reports it")
        self.credits = self._per_model("imagegen_credits", "Credits charged")
        self.compute = self._per_model("imagegen_triton_compute_seconds", "Seconds spent waiting on Triton")
        self.http = Counter(
            "imagegen_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "imagegen_webhook_attempts",
            "Webhook delivery attempts by outcome: delivered, retrying (failed, tried again later) or failed "
            "(the delivery's last attempt, or refused)",
            ["outcome"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "imagegen_jobs", "Jobs in the shared store by status (read every 10 s)", ["status"], registry=self.registry
        )
        self.job_queue_age = Gauge(
            "imagegen_job_queue_age_seconds", "Age of the oldest queued job (0: none queued)", registry=self.registry
        )
        self.registry.register(AdmissionCollector(admission))
        ProcessCollector(registry=self.registry)

    def watch_pool(self, pool: TritonPool) -> None:
        self.registry.register(PoolCollector(pool))

    def _per_model(self, name: str, documentation: str) -> Counter:
        """A counter labelled by model id, in this registry."""
        return Counter(name, documentation, ["model"], registry=self.registry)

    def observe_generation(self, record: UsageRecord, compute_seconds: float, steps: int) -> None:
        """One generation request ended (its ledger row); `steps`: the denoising steps it ran."""
        model, status = record.model or "", str(record.status)
        self.requests.labels(model, status, record.code or "").inc()
        self.duration.labels(model, status).observe(record.latency_ms / 1000)
        self.steps.labels(model).inc(steps)
        self.energy.labels(model).inc(record.energy_kwh)
        self.credits.labels(model).inc(record.credits)
        self.compute.labels(model).inc(compute_seconds)
        if record.status == 200 and record.n:
            self.images.labels(model).inc(record.n)

    def observe_jobs(self, by_status: dict[str, int], oldest_queued: float | None) -> None:
        for status, count in by_status.items():
            self.jobs.labels(status).set(count)
        self.job_queue_age.set(oldest_queued or 0.0)

    def observe_webhook(self, outcome: str) -> None:
        self.webhook_attempts.labels(outcome).inc()

    def observe_http(self, method: str, route: str, status: int) -> None:
        self.http.labels(method if method in HTTP_METHODS else OTHER_METHOD, route, str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    @contextlib.contextmanager
    def served_on(self, host: str, port: int | None) -> Iterator[None]:
        """While open, serve the metrics on a port of their own (`IMAGEGEN_METRICS_PORT`); None: not."""
        if port is None:
            yield
            return
        server, thread = start_http_server(port, host, self.registry)
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

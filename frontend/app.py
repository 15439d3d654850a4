"""The Starlette application: routes, error handling, and the Triton connection's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from frontend.accounting import Ledger
from frontend.adapters import Adapters
from frontend.admission import Admission
from frontend.api.admin import reload_catalog, roll_back, roll_out, status
from frontend.api.auth import login, logout
from frontend.api.body_limits import BodyLimits
from frontend.api.edits import create_edits
from frontend.api.errors import error_response, handle_api_error, http_status
from frontend.api.images import create_images, get_progress
from frontend.api.job_worker import run_workers
from frontend.api.jobs import cancel_job, get_job, job_events, list_jobs
from frontend.api.models import list_models
from frontend.api.openapi import document, openapi_json
from frontend.api.request_ids import REQUEST_ID_HEADER, RequestIds
from frontend.api.security_headers import HEADERS as SECURITY_HEADERS
from frontend.api.security_headers import SecurityHeaders
from frontend.auth.credentials import Authenticator
from frontend.auth.local_secrets import kept_secret, random_token
from frontend.auth.sessions import Sessions
from frontend.catalog import CatalogSource
from frontend.errors import APIError, InferenceUnavailable, InternalError, MethodNotAllowed, RouteNotFound
from frontend.jobs import JobQueue
from frontend.metrics import Metrics
from frontend.progress import ProgressBoard
from frontend.rate_limits import Limits, RateLimiter
from frontend.request_context import current_request_id
from frontend.rollout import Rollouts
from frontend.routing import REFRESH_SECONDS, Routing
from frontend.safety import SafetyFilter
from frontend.sealing import Sealer
from frontend.services import Services
from frontend.settings import Settings
from frontend.store import Store
from frontend.triton_pool import PoolAddress, TritonPool
from frontend.webhooks import Webhooks

log = logging.getLogger(__name__)

STUDIO = Path(__file__).parent / "static" / "studio"
"""The Studio's page: static files, no build step (README, Studio)."""


async def healthz(request: Request) -> JSONResponse:
    """Answers while the process is up; readiness of the models is a separate question."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready while a Triton server of the pool answers and holds every routed version: the signal a
    load balancer routes by. Also reports, per model, generations running and queued, and how many
    servers serve and how many are degraded (`imagegen status` names them)."""
    services = Services.of(request)
    servers = services.pool.readiness(services.routing.routed_models())
    if not servers["serving"]:
        return error_response(InferenceUnavailable("No Triton server is reachable and holds every routed version."))
    return JSONResponse({"status": "ready", "models": services.admission.load(), "triton_servers": servers})


async def to_studio(request: Request) -> RedirectResponse:
    """The root is the Studio's address too, for a person who types only the host."""
    return RedirectResponse("/studio/")


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}."))
    return error_response(RouteNotFound(f"No route {request.method} {request.url.path}."))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Answered outside every middleware (by Starlette's ServerErrorMiddleware): their headers are added here.
    headers = {REQUEST_ID_HEADER: current_request_id(), **SECURITY_HEADERS}
    return error_response(InternalError("The server failed to process the request."), headers)


async def follow_operator_changes(services: Services) -> None:
    """Each refresh: follow the routing table (writing this frontend's heartbeat), have Triton load
    the routed versions, and reload the catalog when its file changed. A failure is logged and
    retried on the next refresh."""
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        try:
            await services.routing.refresh()
            await services.rollouts.reconcile()
            if services.catalog_source.changed():
                services.catalog = await services.catalog_source.load()
                log.info("catalog reloaded: %s", ", ".join(services.catalog.public_ids()))
        except ValueError as exc:
            log.error("the catalog file was not reloaded: %s", exc)
        except APIError as exc:  # Triton down or restarting
            log.warning("routed versions not checked in Triton: %s", exc.message)
        except Exception:
            log.exception("following the routing table failed; retrying in %g s", REFRESH_SECONDS)


async def start_services(
    settings: Settings, store: Store, pool: TritonPool, admission: Admission, metrics: Metrics
) -> Services:
    """Every service a route reads, once the Triton pool is probed (the catalog and the safety filter ask it)."""
    catalog_source = CatalogSource(pool, settings.catalog, settings.aliases, settings.default_model)
    # Routing and rollouts follow the catalog as reloaded: they read it from the services, when called.
    routing = Routing(store, f"{socket.gethostname()}:{settings.port}", lambda: services.catalog, pool)
    session_secret = settings.session_secret or kept_secret(settings.state_dir / "session_secret", random_token)
    sealer = Sealer.from_settings(settings)
    openapi = document()
    if settings.metrics_port is not None:
        del openapi["paths"]["/metrics"]
    services = Services(
        settings=settings,
        pool=pool,
        catalog_source=catalog_source,
        catalog=await catalog_source.load(),
        auth=Authenticator(store, Sessions(store, session_secret, settings.session_ttl_seconds)),
        rate_limits=RateLimiter(
            store, Limits(settings.requests_per_minute, settings.concurrent_generations), settings.request_timeout
        ),
        admission=admission,
        ledger=Ledger(store, settings.device_watts, metrics, http_status),
        adapters=Adapters(store, settings.lora_folder),
        jobs=JobQueue(store, sealer, settings),
        webhooks=Webhooks.from_settings(settings, store, sealer, metrics.observe_webhook),
        progress=ProgressBoard(),
        routing=routing,
        rollouts=Rollouts(pool, routing, lambda: services.catalog, settings.request_timeout),
        safety=await SafetyFilter.load(settings.prompt_policy, pool, settings.safety_threshold),
        metrics=metrics,
        openapi=openapi,
        started=int(time.time()),
    )
    return services


def create_app(settings: Settings, store: Store, triton_url: str) -> Starlette:
    admission = Admission(
        settings.running_per_model, settings.queued_per_model, settings.running_per_key, settings.request_timeout
    )
    metrics = Metrics(admission)  # the middleware counts requests with it from the first

    async def serve_metrics(request: Request) -> Response:
        """`GET /metrics`, without credentials, in Prometheus' text format."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = TritonPool(
            PoolAddress.parse(triton_url),
            settings.triton_timeout,
            settings.triton_secret,
            bool(settings.triton_shared_memory),
        )
        try:
            await pool.refresh()
            metrics.watch_pool(pool)
            services = app.state.services = await start_services(settings, store, pool, admission, metrics)
            await services.routing.refresh()  # the routing table is followed before the first request
            tasks = [
                asyncio.create_task(pool.watch()),
                asyncio.create_task(follow_operator_changes(services)),
                asyncio.create_task(run_workers(services)),
                asyncio.create_task(services.webhooks.deliver_forever()),
            ]
            with metrics.served_on(settings.host, settings.metrics_port):
                yield
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.routing.leave()
        finally:
            await pool.close()

    app = Starlette(
        routes=[
            Route("/v1/images/generations", create_images, methods=["POST"]),
            Route("/v1/images/edits", create_edits, methods=["POST"]),
            Route("/v1/images/progress/{progress_id}", get_progress, methods=["GET"]),
            Route("/v1/images/jobs", list_jobs, methods=["GET"]),
            Route("/v1/images/jobs/{job_id}", get_job, methods=["GET"]),
            Route("/v1/images/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
            Route("/v1/images/jobs/{job_id}/events", job_events, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/auth/login", login, methods=["POST"]),
            Route("/v1/admin/models/{model}/rollout", roll_out, methods=["POST"]),
            Route("/v1/admin/models/{model}/rollback", roll_back, methods=["POST"]),
            Route("/v1/admin/status", status, methods=["GET"]),
            Route("/v1/admin/catalog/reload", reload_catalog, methods=["POST"]),
            Route("/v1/auth/logout", logout, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            # On the API's port unless IMAGEGEN_METRICS_PORT gives them a port of their own.
            *([Route("/metrics", serve_metrics, methods=["GET"])] if settings.metrics_port is None else []),
            Route("/", to_studio, methods=["GET"]),
            Mount("/studio", StaticFiles(directory=STUDIO, html=True), name="studio"),
        ],
        exception_handlers={
            APIError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(RequestIds, metrics=metrics),
            Middleware(BodyLimits, max_body_bytes=settings.max_body_bytes),
        ],
        lifespan=lifespan,
    )
    return app

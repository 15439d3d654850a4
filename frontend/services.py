"""What a route needs, built once at start-up and read through one accessor, `Services.of(request)`.

`frontend/app.py` builds it in the app's lifespan, once the Triton pool has been probed (the catalog
and the safety filter are read from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from frontend.accounting import Ledger
from frontend.adapters import Adapters
from frontend.admission import Admission
from frontend.auth.credentials import Authenticator
from frontend.catalog import Catalog, CatalogSource
from frontend.jobs import JobQueue
from frontend.metrics import Metrics
from frontend.progress import ProgressBoard
from frontend.rate_limits import RateLimiter
from frontend.rollout import Rollouts
from frontend.routing import Routing
from frontend.safety import SafetyFilter
from frontend.settings import Settings
from frontend.triton_pool import TritonPool
from frontend.webhooks import Webhooks

if TYPE_CHECKING:  # the accessor reads the app's state; the services themselves know no HTTP
    from starlette.requests import Request


@dataclass(kw_only=True)
class Services:
    settings: Settings
    pool: TritonPool
    catalog_source: CatalogSource
    catalog: Catalog
    """The catalog served: replaced when its file changes or an operator reloads it."""
    auth: Authenticator
    rate_limits: RateLimiter
    admission: Admission
    ledger: Ledger
    adapters: Adapters
    jobs: JobQueue
    webhooks: Webhooks
    progress: ProgressBoard
    routing: Routing
    rollouts: Rollouts
    safety: SafetyFilter
    metrics: Metrics
    openapi: dict[str, Any]
    """The document `/openapi.json` serves: without `/metrics` where that has a port of its own."""
    started: int
    """When this frontend started (Unix seconds): `/v1/models`' `created`."""

    @staticmethod
    def of(request: Request) -> Services:
        services: Services = request.app.state.services
        return services

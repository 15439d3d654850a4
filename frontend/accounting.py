"""What a request cost, from the work measured, and the ledger row that records it.

`energy_cost`, in kWh: the seconds the request spent in Triton (every inference call, the safety
check included) times the device's power (`IMAGEGEN_DEVICE_WATTS`). `credits_cost`: per image,
`per_image + per_megapixel_step * megapixels * steps` from the plan's price for the model (its own
row, else the plan's `*` row, else free). Credits are charged only when images are returned;
energy is recorded for every admitted request, since a refused image was still computed.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from frontend.errors import APIError, InternalError
from frontend.request_context import current_request
from frontend.store.ledger import UsageRecord

if TYPE_CHECKING:  # the pipelines import the clock: the ledger's HTTP-facing types stay out of their imports
    from frontend.auth.credentials import Principal
    from frontend.metrics import Metrics
    from frontend.pipelines.job import GenerationJob
    from frontend.progress import Progress
    from frontend.store import Store
    from frontend.store.plans import Price

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Cost:
    energy_kwh: float
    credits: float


def energy_kwh(seconds: float, watts: float) -> float:
    return round(seconds * watts / JOULES_PER_KWH, 9)


def credits(price: Price | None, n: int, width: int, height: int, steps: int) -> float:
    if price is None:
        return 0.0
    return round(n * (price.per_image + price.per_megapixel_step * width * height / 1e6 * steps), 6)


class InferenceClock:
    """Seconds one generation spent waiting on Triton: the measured work that energy is billed from.

    Time with several calls outstanding counts once (the two text encoders are called together), so
    the seconds are a part of the generation's own, as `Server-Timing`'s `inference` says."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._outstanding = 0
        self._since = 0.0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """One call to Triton, timed while it is outstanding."""
        if not self._outstanding:
            self._since = time.perf_counter()
        self._outstanding += 1
        try:
            yield
        finally:
            self._outstanding -= 1
            if not self._outstanding:
                self.seconds += time.perf_counter() - self._since


@dataclass(frozen=True)
class Work:
    """What a request asked of a model, in the terms prices use."""

    model: str
    n: int
    width: int
    height: int
    steps: int

    @classmethod
    def of(cls, model: str, job: GenerationJob) -> Work:
        return cls(model, len(job.seeds), job.width, job.height, job.steps)


@dataclass
class Usage:
    """One request's ledger line, filled in as the request proceeds; never its prompt or images."""

    principal: Principal
    progress: Progress  # its denoising steps, counted by the pipeline
    clock: InferenceClock = field(default_factory=InferenceClock)
    work: Work | None = None  # None until the request is validated
    cost: Cost | None = None  # None until charged
    batch: bool = False  # a `:batch` job's: its plan's batch discount applies

    def measured(self, seconds: float) -> None:
        self.clock.seconds += seconds


class Ledger:
    def __init__(
        self, store: Store, device_watts: float, metrics: Metrics, http_status: Callable[[APIError], int]
    ) -> None:
        """`http_status`: the status an error is answered with (frontend/api/errors.py), recorded with its code."""
        self.store = store
        self.device_watts = device_watts
        self.metrics = metrics
        self.http_status = http_status

    @contextlib.asynccontextmanager
    async def record(self, principal: Principal, progress: Progress) -> AsyncIterator[Usage]:
        """Write the request's ledger row when it ends, however it ends; count it in the metrics and
        name its model and error code in the request's access log line."""
        usage = Usage(principal, progress)
        created_at, started = time.time(), time.perf_counter()
        status, code = 200, None
        try:
            yield usage
        except BaseException as exc:
            failure = exc if isinstance(exc, APIError) else InternalError(repr(exc))
            status, code = self.http_status(failure), failure.code
            raise
        finally:
            cost = usage.cost or Cost(energy_kwh(usage.clock.seconds, self.device_watts), 0.0)
            work = asdict(usage.work) if usage.work else dict.fromkeys(Work.__dataclass_fields__)
            record = UsageRecord(
                id=f"use_{secrets.token_hex(8)}",
                principal=principal.id,
                created_at=created_at,
                **work,
                energy_kwh=cost.energy_kwh,
                credits=cost.credits,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                status=status,
                code=code,
            )
            self.metrics.observe_generation(record, usage.clock.seconds, progress.denoised)
            if request := current_request():
                request.model, request.code = record.model or "", code or ""
            await self.store.ledger.record(record)

    async def charge(self, usage: Usage) -> Cost:
        """The cost of a request whose images are about to be returned: the numbers the response
        reports and the ledger records."""
        work = usage.work
        if work is None:
            raise RuntimeError("a request is charged only once its work is known")
        plan = usage.principal.plan
        price = await self.store.plans.price(plan.name, work.model)
        discount = plan.batch_discount if usage.batch else 0.0
        usage.cost = Cost(
            energy_kwh(usage.clock.seconds, self.device_watts),
            round(credits(price, work.n, work.width, work.height, work.steps) * (1 - discount), 6),
        )
        return usage.cost

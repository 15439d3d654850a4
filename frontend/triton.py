"""The one place that speaks to Triton (`tritonclient.http.aio`), turning its failures into API errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
import numpy as np
from tritonclient.http import InferInput, InferRequestedOutput
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from frontend.api.errors import InferenceFailed, InferenceUnavailable

T = TypeVar("T")

IDENTITY = {"Accept-Encoding": "identity"}
"""aiohttp asks for gzip by default and Triton then compresses every tensor: a 1 MB output took
69 ms instead of 5 ms here."""
PROBE_TIMEOUT_S = 2.0
"""Readiness questions are cheap; a Triton that takes longer to answer one is not ready."""


class TritonClient:
    """Async Triton client that also measures the time a request spends in Triton.

    Every call has a deadline (`timeout`, seconds), so a stalled Triton fails requests with a 503
    instead of holding them; a dead one fails them at once (the connection drops or is refused).
    aiohttp drops a dead Triton's connections and opens new ones, so a restarted Triton is used
    again without a new client.
    """

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url
        self.timeout = timeout
        self._client = InferenceServerClient(url, conn_timeout=timeout)

    async def close(self) -> None:
        await self._client.close()

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], clock: InferenceClock
    ) -> dict[str, np.ndarray]:
        request = []
        for name, array in inputs.items():
            tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array, binary_data=True)
            request.append(tensor)
        wanted = [InferRequestedOutput(name, binary_data=True) for name in outputs]
        started = time.perf_counter()
        try:
            result = await self._call(self._client.infer(model, request, outputs=wanted, headers=IDENTITY))
        except InferenceServerException as exc:
            raise _as_api_error(model, exc) from None
        finally:
            clock.seconds += time.perf_counter() - started
        return {name: result.as_numpy(name) for name in outputs}

    async def model_ready(self, model: str) -> bool:
        return bool(await self._call(self._client.is_model_ready(model, headers=IDENTITY), PROBE_TIMEOUT_S))

    async def ready(self) -> bool:
        """Whether Triton answers and every model in its repository is ready (what `/readyz` asks)."""
        try:
            index = await self._call(self._client.get_model_repository_index(headers=IDENTITY), PROBE_TIMEOUT_S)
        except (InferenceUnavailable, InferenceServerException):
            return False
        return bool(index) and all(entry.get("state") == "READY" for entry in index)

    async def model_configs(self) -> dict[str, dict[str, Any]]:
        """Config of every ready model in the repository, by model name."""
        try:
            index = await self._call(self._client.get_model_repository_index(headers=IDENTITY))
            ready = [entry["name"] for entry in index if entry.get("state") == "READY"]
            return {name: await self._call(self._client.get_model_config(name, headers=IDENTITY)) for name in ready}
        except InferenceServerException as exc:
            raise InferenceUnavailable(f"Triton did not list its models: {exc.message()}") from None

    async def _call(self, call: Awaitable[T], timeout: float | None = None) -> T:
        """One request to Triton under its deadline, transport failures as InferenceUnavailable."""
        seconds = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(seconds):
                return await call
        except TimeoutError:
            raise InferenceUnavailable(f"The inference server did not answer within {seconds:g} s.") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise InferenceUnavailable(f"The inference server cannot be reached: {exc}") from None


class InferenceClock:
    """Seconds one generation spent waiting on Triton: the measured work that energy is billed from."""

    def __init__(self) -> None:
        self.seconds = 0.0


def _as_api_error(model: str, exc: InferenceServerException) -> InferenceFailed | InferenceUnavailable:
    message = exc.message() or str(exc)
    if "unknown model" in message.lower() or "is not ready" in message:
        return InferenceUnavailable(f"Model {model} is not available in Triton: {message}")
    return InferenceFailed(f"Triton failed on {model}: {message}")

"""The one place that speaks to Triton (`tritonclient.http.aio`), turning its failures into API errors.

What Triton or the connection says goes to the log (with the request id, logs.py), never to the
client: it names internal models, addresses and files. Clients get a generic message and the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import numpy.typing as npt
from tritonclient.http import InferInput, InferRequestedOutput
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from frontend.errors import InferenceFailed, InferenceUnavailable
from frontend.request_context import current_request_id
from frontend.shared_memory import NoRoom, Region

if TYPE_CHECKING:  # the ledger's clock, which the client only runs: the client stays below the ledger
    from frontend.accounting import InferenceClock

T = TypeVar("T")

log = logging.getLogger(__name__)

IDENTITY = {"Accept-Encoding": "identity"}
"""aiohttp asks for gzip by default and Triton then compresses every tensor: a 1 MB output took
69 ms instead of 5 ms here."""
SECRET_HEADER = "imagegen-triton-secret"
"""The header Triton's restricted APIs (model load and unload, shared memory, trace and log settings)
require: `IMAGEGEN_TRITON_SECRET` in docker-compose.yml, a new random one per embedded Triton start."""
PROBE_TIMEOUT_S = 2.0
"""Readiness questions are cheap; a Triton that takes longer to answer one is not ready."""
UNREACHABLE = "The inference server cannot be reached; retry later."
NOT_AVAILABLE = "The model is not available on the inference server right now; retry later."
FAILED = "The inference server failed to process the request."
UNLISTED = "The inference server did not list its models; retry later."
"""What clients are told instead of Triton's own words (those go to the log)."""
UNREGISTER_RETRY_S = 0.05
"""How soon to ask again for a region Triton still reads (a step of a request whose client left)."""


@dataclass(frozen=True)
class ConstantInputs:
    """A request's inputs that hold for every call it makes to a model (a denoiser's conditioning),
    prepared once: named in a shared-memory region Triton has mapped, or serialised once and sent
    with each call."""

    tensors: tuple[InferInput, ...]
    region: str | None = None
    """The shared-memory region they lie in; None: sent over HTTP."""


@dataclass
class SharedMemory:
    """A client's use of system shared memory, shared by its pinned copies (`at_version`)."""

    enabled: bool
    """Told that Triton shares this host's /dev/shm, and Triton has not refused a region."""
    regions: set[Region] = field(default_factory=set)
    """Those of requests under way."""
    releasing: set[asyncio.Task[None]] = field(default_factory=set)
    """Unregistrations Triton has not answered yet."""


class TritonClient:
    """Async Triton client that also measures the time a request spends in Triton.

    Every call has a deadline (`timeout`, seconds), so a stalled Triton fails requests with a 503
    instead of holding them; a dead one fails them at once (the connection drops or is refused).
    aiohttp drops a dead Triton's connections and opens new ones, so a restarted Triton is used
    again without a new client.

    `shared_memory`: Triton runs on this host and maps its /dev/shm (the embedded one), so a request's
    constant inputs go to it once, in a region of system shared memory (`constant_inputs`).
    """

    def __init__(self, url: str, timeout: float = 60.0, secret: str | None = None, shared_memory: bool = False) -> None:
        self.url = url
        self.timeout = timeout
        self._client = InferenceServerClient(url, conn_timeout=timeout)
        self._headers = {**IDENTITY, SECRET_HEADER: secret} if secret else IDENTITY
        self._shared_memory = SharedMemory(enabled=shared_memory)
        self.model_version = ""
        """The version every `infer` names; "" lets Triton choose. See `at_version`."""

    def at_version(self, version: int) -> TritonClient:
        """This client, sharing its connections, with every `infer` naming `version`: how one request
        keeps all its Triton calls (tokenizer, encoders, every denoiser step, VAE) on one version."""
        pinned = copy.copy(self)
        pinned.model_version = str(version)
        return pinned

    async def close(self) -> None:
        """Regions still held are released (Triton is asked to let go of them for a moment), then the
        connections closed."""
        for region in list(self._shared_memory.regions):
            self._release(region)
        releasing = self._shared_memory.releasing
        if releasing:
            _, unanswered = await asyncio.wait(releasing, timeout=PROBE_TIMEOUT_S)
            for task in unanswered:
                task.cancel()
        await self._client.close()

    @contextlib.asynccontextmanager
    async def constant_inputs(self, inputs: Mapping[str, npt.NDArray[Any]]) -> AsyncIterator[ConstantInputs]:
        """`inputs` prepared once for every `infer` of the block that names them: written to a region
        of system shared memory and registered with Triton where this client may (see the class), else
        serialised once to be sent with each call. The region is released when the block ends, however
        it ends: done, failed, or cancelled (a client that left)."""
        if not self._shared_memory.enabled:
            yield ConstantInputs(tuple(_tensor(name, array) for name, array in inputs.items()))
            return
        try:
            region = Region(inputs)
        except NoRoom as exc:
            log.warning("constant inputs sent over HTTP: %s", exc)
            yield ConstantInputs(tuple(_tensor(name, array) for name, array in inputs.items()))
            return
        self._shared_memory.regions.add(region)
        try:
            if await self._register(region):
                placed = []
                for name, place in region.placements.items():
                    tensor = InferInput(name, list(place.shape), place.datatype)
                    placed.append(tensor.set_shared_memory(region.name, place.byte_size, place.offset))
                yield ConstantInputs(tuple(placed), region.name)
            else:
                yield ConstantInputs(tuple(_tensor(name, array) for name, array in inputs.items()))
        finally:
            self._release(region)

    async def _register(self, region: Region) -> bool:
        """Whether Triton mapped `region`; one that refuses (it cannot open this host's /dev/shm, or
        refuses the secret) gets every request's constant inputs over HTTP from then on."""
        try:
            await self._call(
                self._client.register_system_shared_memory(
                    region.name, region.key, region.byte_size, headers=self._headers
                )
            )
        except InferenceServerException as exc:
            _logged(f"shared memory region {region.name}", exc)
            log.warning("Triton at %s refused a shared memory region: constant inputs go over HTTP", self.url)
            self._shared_memory.enabled = False
            return False
        return True

    def _release(self, region: Region) -> None:
        """Unmap and unlink `region` here at once, and have Triton unregister it in the background."""
        region.destroy()
        self._shared_memory.regions.discard(region)
        task = asyncio.get_running_loop().create_task(self._unregister(region.name))
        self._shared_memory.releasing.add(task)
        task.add_done_callback(self._shared_memory.releasing.discard)

    async def _unregister(self, name: str) -> None:
        """Ask until Triton lets go: it refuses while a call that reads the region still runs there
        (Triton 2.50+ counts them), e.g. the step of a request whose client left. A Triton that is gone
        (killed, restarting) took its regions with it; one stalled past the call timeout keeps it."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            try:
                await self._call(self._client.unregister_system_shared_memory(name, headers=self._headers))
                return
            except InferenceUnavailable:
                return
            except InferenceServerException as exc:
                if "in use" not in (exc.message() or "") or asyncio.get_running_loop().time() > deadline:
                    _logged(f"unregistering shared memory region {name}", exc)
                    return
            await asyncio.sleep(UNREGISTER_RETRY_S)

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        outputs: Sequence[str],
        clock: InferenceClock,
        constants: ConstantInputs | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """`outputs` of one call of `model`, with `inputs` and the `constants` prepared for the request."""
        request = [_tensor(name, array) for name, array in inputs.items()]
        if constants is not None:
            request += constants.tensors
        wanted = [InferRequestedOutput(name, binary_data=True) for name in outputs]
        try:
            with clock.waiting():
                result = await self._call(
                    self._client.infer(
                        model,
                        request,
                        model_version=self.model_version,
                        outputs=wanted,
                        # The API request's id: Triton's trace records it, so one generation's calls are found.
                        request_id=current_request_id(),
                        headers=self._headers,
                    )
                )
        except InferenceServerException as exc:
            raise _as_api_error(model, exc) from None
        return {name: result.as_numpy(name) for name in outputs}

    async def model_ready(self, model: str) -> bool:
        return bool(await self._call(self._client.is_model_ready(model, headers=self._headers), PROBE_TIMEOUT_S))

    async def ready(self) -> bool:
        """Whether Triton answers and every model in its repository has a ready version (what `/readyz` asks)."""
        try:
            index = await self._repository_index(PROBE_TIMEOUT_S)
        except InferenceUnavailable:
            return False
        # Per model, not per entry: during a rollout a version is listed loading, unloading, then
        # unloaded beside the version that serves.
        ready = {entry["name"] for entry in index if entry.get("state") == "READY"}
        return bool(index) and all(entry["name"] in ready for entry in index)

    async def model_configs(self) -> dict[str, dict[str, Any]]:
        """Config of every ready model in the repository, by model name."""
        ready = [entry["name"] for entry in await self._repository_index() if entry.get("state") == "READY"]
        try:
            return {
                name: await self._call(self._client.get_model_config(name, headers=self._headers)) for name in ready
            }
        except InferenceServerException as exc:
            raise _unlisted(exc) from None

    async def ready_versions(self) -> dict[str, set[int]]:
        """The versions of each model that are loaded and ready."""
        versions: dict[str, set[int]] = {}
        for entry in await self._repository_index():
            if entry.get("state") == "READY" and entry.get("version"):
                versions.setdefault(entry["name"], set()).add(int(entry["version"]))
        return versions

    async def load_versions(self, model: str, versions: set[int]) -> None:
        """Have Triton serve exactly `versions` of `model` (explicit model control): a load with the
        model's config, its version policy replaced, loads the new ones and unloads the others."""
        try:
            config = await self._call(self._client.get_model_config(model, headers=self._headers))
            config["version_policy"] = {"specific": {"versions": sorted(versions)}}
            await self._call(self._client.load_model(model, headers=self._headers, config=json.dumps(config)))
        except InferenceServerException as exc:
            raise _as_api_error(model, exc) from None

    async def _repository_index(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every model version in Triton's repository and its state."""
        try:
            index: list[dict[str, Any]] = await self._call(
                self._client.get_model_repository_index(headers=self._headers), timeout
            )
        except InferenceServerException as exc:
            raise _unlisted(exc) from None
        return index

    async def _call(self, call: Awaitable[T], timeout: float | None = None) -> T:
        """One request to Triton under its deadline, transport failures as InferenceUnavailable."""
        seconds = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(seconds):
                return await call
        except TimeoutError:
            raise InferenceUnavailable(f"The inference server did not answer within {seconds:g} s.") from None
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("Triton at %s cannot be reached: %s", self.url, exc)
            raise InferenceUnavailable(UNREACHABLE) from None


def _tensor(name: str, array: npt.NDArray[Any]) -> InferInput:
    """`array` as a binary input of the request body."""
    tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    return tensor.set_data_from_numpy(array, binary_data=True)


def _logged(subject: str, exc: InferenceServerException) -> str:
    """Triton's answer, written to the log in full (the client's error stays generic)."""
    message = exc.message() or str(exc)
    log.warning("Triton failed on %s (HTTP %s): %s", subject, exc.status(), message)
    return message


def _unlisted(exc: InferenceServerException) -> InferenceUnavailable:
    _logged("its model index", exc)
    return InferenceUnavailable(UNLISTED)


def _as_api_error(model: str, exc: InferenceServerException) -> InferenceFailed | InferenceUnavailable:
    message = _logged(model, exc)
    # A shared memory region it no longer knows: a Triton restarted under the request.
    if "unknown model" in message.lower() or "is not ready" in message or "shared memory region" in message:
        return InferenceUnavailable(NOT_AVAILABLE)
    return InferenceFailed(FAILED)

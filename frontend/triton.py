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
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import numpy as np
import numpy.typing as npt
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from frontend.errors import InferenceFailed, InferenceUnavailable
from frontend.request_context import current_request_id
from frontend.shared_memory import NoRoom, Region, RegionPool, Space, lay_out_tensors

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
EXCHANGED_INPUT, EXCHANGED_OUTPUT = "input:", "output:"
"""How a call's tensors are named in its region: an input and an output may share a name."""
LEARNED_CALLS = 256
"""Calls whose outputs' shapes a client remembers (`SharedMemory.learned`): a model, its version,
its inputs' shapes; a few per model and size served."""
UNKNOWN_REGION = "Unable to find shared memory region"
ALREADY_REGISTERED = "already in manager"
"""What Triton answers about a region it has not registered (it restarted since), and about one it has."""
UNREGISTER_RETRY_S = 0.05
"""How soon to ask again for a region Triton still reads (a step of a request whose client left)."""

Signature = tuple[str, str, tuple[tuple[str, tuple[int, ...], str], ...], tuple[str, ...]]
"""A call as far as its outputs' shapes go: model, version, inputs (name, shape, dtype), outputs."""


@dataclass(frozen=True)
class ConstantInputs:
    """A request's inputs that hold for every call it makes to a model (a denoiser's conditioning),
    prepared once: named in a shared-memory region Triton has mapped, or serialised once and sent
    with each call."""

    tensors: tuple[InferInput, ...]
    region: Region | None = None
    """The shared-memory region they lie in; None: sent over HTTP."""


@dataclass
class SharedMemory:
    """A client's use of system shared memory, shared by its pinned copies (`at_version`)."""

    enabled: bool
    """Told that Triton shares this host's /dev/shm, and Triton has not refused a region."""
    regions: set[Region] = field(default_factory=set)
    """Every region this client holds: in use by a call or a request, or idle in `pool`."""
    pool: RegionPool = field(default_factory=RegionPool)
    learned: OrderedDict[Signature, dict[str, Space]] = field(default_factory=OrderedDict)
    """The outputs' shapes of calls made over HTTP: a call of the same signature gets them in shared memory."""
    releasing: set[asyncio.Task[None]] = field(default_factory=set)
    """Unregistrations Triton has not answered yet."""
    epoch: int = 0
    """Counts the times Triton was found gone or restarted: a region registered before the last one
    is no use to it, and is released when its use ends rather than pooled."""

    def forget_registrations(self) -> list[Region]:
        """Triton lost every region (it is gone, or restarted): the pool's, for the caller to release."""
        self.epoch += 1
        return self.pool.clear()


class TritonClient:
    """Async Triton client that also measures the time a request spends in Triton.

    Every call has a deadline (`timeout`, seconds), so a stalled Triton fails requests with a 503
    instead of holding them; a dead one fails them at once (the connection drops or is refused).
    aiohttp drops a dead Triton's connections and opens new ones, so a restarted Triton is used
    again without a new client.

    `shared_memory`: Triton runs on this host and maps its /dev/shm (the embedded one), so a request's
    constant inputs go to it once (`constant_inputs`), and a call's inputs and outputs go through
    regions too (frontend/shared_memory.py), the HTTP body carrying their names alone.
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
        of system shared memory Triton has mapped where this client may (see the class), else
        serialised once to be sent with each call. The region goes back to the pool when the block
        ends done, and is released when it ends otherwise (a call may still read it)."""
        region = await self._region(inputs)
        if region is None:
            yield ConstantInputs(tuple(_tensor(name, array) for name, array in inputs.items()))
            return
        done = False
        try:
            yield ConstantInputs(tuple(_placed(region, name) for name in inputs), region)
            done = True
        finally:
            self._finished(region, done)

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        outputs: Sequence[str],
        clock: InferenceClock,
        constants: ConstantInputs | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """`outputs` of one call of `model`, with `inputs` and the `constants` prepared for the request.
        Where this client uses shared memory and a call of these shapes was made before, the inputs
        and outputs go through a region; where Triton no longer knows a region (it restarted), the
        call is made once more over HTTP."""
        signature = _signature(model, self.model_version, inputs, outputs)
        spaces = self._shared_memory.learned.get(signature) if self._shared_memory.enabled else None
        region = (
            None if spaces is None else await self._region(_exchanged(inputs), _exchanged(spaces, EXCHANGED_OUTPUT))
        )
        if region is not None:
            self._shared_memory.learned.move_to_end(signature)
            done = False
            try:
                request = [_placed(region, EXCHANGED_INPUT + name, name) for name in inputs]
                wanted = [_placed_output(region, name) for name in outputs]
                await self._infer(model, request, wanted, clock, constants)
                arrays = {name: region.read(EXCHANGED_OUTPUT + name) for name in outputs}
                done = True
                return arrays
            except UnknownRegion:
                self._shared_memory.learned.pop(signature, None)
                await self._restarted(constants)
            finally:
                self._finished(region, done)
        request = [_tensor(name, array) for name, array in inputs.items()]
        wanted = [InferRequestedOutput(name, binary_data=True) for name in outputs]
        try:
            result = await self._infer(model, request, wanted, clock, constants)
        except UnknownRegion:
            await self._restarted(constants)
            try:
                result = await self._infer(model, request, wanted, clock, constants)
            except UnknownRegion:
                raise InferenceUnavailable(NOT_AVAILABLE) from None
        arrays = {name: result.as_numpy(name) for name in outputs}
        if self._shared_memory.enabled and all(
            array.dtype != np.object_ for array in [*inputs.values(), *arrays.values()]
        ):
            self._learn(
                signature, {name: (array.shape, np_to_triton_dtype(array.dtype)) for name, array in arrays.items()}
            )
        return arrays

    async def _infer(
        self,
        model: str,
        request: list[InferInput],
        wanted: list[InferRequestedOutput],
        clock: InferenceClock,
        constants: ConstantInputs | None,
    ) -> InferResult:
        try:
            with clock.waiting():
                return await self._call(
                    self._client.infer(
                        model,
                        request + list(constants.tensors if constants is not None else ()),
                        model_version=self.model_version,
                        outputs=wanted,
                        # The API request's id: Triton's trace records it, so one generation's calls are found.
                        request_id=current_request_id(),
                        # A copy: tritonclient writes the body's JSON length into the dict it is given, and
                        # a call whose body is JSON alone (every tensor in shared memory) must not inherit it.
                        headers=dict(self._headers),
                    )
                )
        except InferenceServerException as exc:
            if UNKNOWN_REGION in (exc.message() or ""):
                _logged(model, exc)
                raise UnknownRegion from None
            raise _as_api_error(model, exc) from None
        except InferenceUnavailable:
            self._forget_registrations()  # gone (killed, restarting): it took its regions with it
            raise

    def _learn(self, signature: Signature, spaces: dict[str, Space]) -> None:
        learned = self._shared_memory.learned
        learned[signature] = spaces
        while len(learned) > LEARNED_CALLS:
            learned.popitem(last=False)

    async def _restarted(self, constants: ConstantInputs | None) -> None:
        """Triton forgot every region (it restarted while they idled): the pool's are dropped, and the
        request's conditioning registered again for the call to be made once more."""
        self._forget_registrations()
        if constants is not None and constants.region is not None and not await self._register(constants.region):
            raise InferenceUnavailable(NOT_AVAILABLE)

    def _forget_registrations(self) -> None:
        """Triton lost every region: the pool's are released, and those in use when their use ends."""
        for region in self._shared_memory.forget_registrations():
            self._release(region)

    async def _region(
        self, arrays: Mapping[str, npt.NDArray[Any]], spaces: Mapping[str, Space] | None = None
    ) -> Region | None:
        """A registered region holding `arrays` and room for `spaces`: an idle one of the pool, else a
        new one; None where this client does not use shared memory, /dev/shm has no room, or Triton
        refuses it."""
        if not self._shared_memory.enabled:
            return None
        layout = lay_out_tensors(arrays, spaces)
        region = self._shared_memory.pool.take(layout[1])
        if region is None:
            try:
                region = Region(layout[1])
            except NoRoom as exc:
                log.warning("tensors sent over HTTP: %s", exc)
                return None
            self._shared_memory.regions.add(region)
            registered = False
            try:
                registered = await self._register(region)
            finally:
                if not registered:
                    self._release(region)
            if not registered:
                return None
        try:
            region.lay_out(layout, arrays)
        except BaseException:
            self._finished(region, done=False)
            raise
        return region

    def _finished(self, region: Region, done: bool) -> None:
        """`region` back to the pool after a use that ended `done`; released after one that did not
        (a call of it may still be running in Triton, and write into it), or if Triton has lost it."""
        if not done or region.epoch != self._shared_memory.epoch:
            self._release(region)
            return
        for evicted in self._shared_memory.pool.give(region):
            self._release(evicted)

    async def _register(self, region: Region) -> bool:
        """Whether Triton mapped `region`; one that refuses (it cannot open this host's /dev/shm, or
        refuses the secret) gets every tensor over HTTP from then on."""
        try:
            await self._call(
                self._client.register_system_shared_memory(
                    region.name, region.key, region.byte_size, headers=self._headers
                )
            )
        except InferenceServerException as exc:
            # "Already in manager": registered again after a restart, by another call.
            if ALREADY_REGISTERED not in (exc.message() or ""):
                _logged(f"shared memory region {region.name}", exc)
                log.warning("Triton at %s refused a shared memory region: tensors go over HTTP", self.url)
                self._shared_memory.enabled = False
                return False
        region.epoch = self._shared_memory.epoch
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


class UnknownRegion(Exception):
    """Triton no longer knows a region a call named: it restarted since the region was registered.
    Never an answer: the call is made again (`TritonClient.infer`)."""


def _tensor(name: str, array: npt.NDArray[Any]) -> InferInput:
    """`array` as a binary input of the request body."""
    tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    return tensor.set_data_from_numpy(array, binary_data=True)


def _placed(region: Region, place: str, name: str | None = None) -> InferInput:
    """Input `name` (by default `place`), read from its `place` in `region`."""
    placement = region.placements[place]
    tensor = InferInput(name or place, list(placement.shape), placement.datatype)
    return tensor.set_shared_memory(region.name, placement.byte_size, placement.offset)


def _placed_output(region: Region, name: str) -> InferRequestedOutput:
    """Output `name`, written by Triton to its place in `region`."""
    placement = region.placements[EXCHANGED_OUTPUT + name]
    wanted = InferRequestedOutput(name, binary_data=True)
    wanted.set_shared_memory(region.name, placement.byte_size, placement.offset)
    return wanted


def _exchanged(tensors: Mapping[str, T], prefix: str = EXCHANGED_INPUT) -> dict[str, T]:
    return {prefix + name: value for name, value in tensors.items()}


def _signature(model: str, version: str, inputs: Mapping[str, npt.NDArray[Any]], outputs: Sequence[str]) -> Signature:
    return model, version, tuple((name, array.shape, array.dtype.str) for name, array in inputs.items()), tuple(outputs)


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

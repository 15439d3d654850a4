"""System shared memory regions, kept registered with Triton and reused request after request.

A denoiser's conditioning (FLUX.1's T5 states, 512 x 4096 float32 or 8 MB a sample for dev, the
pooled vector, the position ids, the guidance; SDXL's states, pooled vector and time ids; the LoRA
factors) is the same at every step of a request. Over HTTP it is serialised, sent and parsed again at
each step; a Triton on this host (the embedded one, or one sharing this host's /dev/shm) maps a
region the frontend writes once instead. A call's own tensors (a step's latents in and prediction
out: 512 KB each way for SDXL at 1024x1024, 1 MB for FLUX.1; T5's states out; the VAE's image out)
go through a region too, once a first call of the same shapes has shown the outputs' sizes: the HTTP
body is then a few hundred bytes of JSON.

Regions are costly to make (the pages of a new one fault in on both sides: writing 4 MB took ~5 ms,
then Triton's first read as long again; registering is a round trip) and cheap to reuse, so a region a
request is done with waits in a `RegionPool` for the next, still registered. One a call may still be
writing into (its request cancelled) is never reused. Every region is named after this process
(`imagegen_<pid>_<random>`), so its owner is known from the name alone.

This module owns the regions on the frontend's side; frontend/triton.py registers them with Triton
and names them in each call.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype
from tritonclient.utils import shared_memory as shm

ALIGNMENT = 64
"""Each tensor starts on a cache line: Triton copies it from there into its batch."""
MIN_REGION = 64 * 1024
IDLE_REGIONS = 16
IDLE_BYTES = 512 * 1024 * 1024
"""A pool's bounds: about two regions (conditioning, a call's tensors) for each of 8 requests at once."""
SHM = "/dev/shm"
HEADROOM = 64 * 1024 * 1024
"""Room left free under /dev/shm for others (Triton's Python backend stubs exchange tensors there)."""


class NoRoom(OSError):
    """/dev/shm has no room for a region: writing into an mmap past the room would kill the process
    (SIGBUS), so the caller sends the tensors another way."""


def region_prefix(pid: int | None = None) -> str:
    """How this process's regions (or process `pid`'s) are named, in Triton and under /dev/shm."""
    return f"imagegen_{os.getpid() if pid is None else pid}_"


Space = tuple[tuple[int, ...], str]
"""An output's shape and Triton datatype: room Triton writes it into."""


@dataclass(frozen=True)
class Placement:
    """Where one tensor lies in a region: what an inference request names instead of sending it."""

    offset: int
    byte_size: int
    shape: tuple[int, ...]
    datatype: str
    """Triton's name of the dtype (`FP32`)."""


Layout = tuple[dict[str, Placement], int]
"""Where each tensor lies in a region, and the bytes they take in all."""


class Region:
    """One region of this process: tensors laid out back to back, for one use at a time (`lay_out`).

    `name` is both Triton's name for it and its key (the file under /dev/shm). Python's
    multiprocessing resource tracker, which `tritonclient.utils.shared_memory` creates it through,
    also unlinks it should this process die without `destroy`.
    """

    def __init__(self, byte_size: int) -> None:
        self.name = f"{region_prefix()}{secrets.token_hex(8)}"
        self.byte_size = max(MIN_REGION, 1 << (byte_size - 1).bit_length())
        """Room for `byte_size`, rounded up to a power of two so that another use of about that size fits."""
        self.placements: dict[str, Placement] = {}
        self.epoch = 0
        """Set by whoever registers it: which life of the Triton it was registered with."""
        space = os.statvfs(SHM)
        if space.f_bavail * space.f_frsize < self.byte_size + HEADROOM:
            raise NoRoom(f"{SHM} has no room for {self.byte_size} bytes")
        self._destroyed = False
        self._handle = shm.create_shared_memory_region(self.name, self.name, self.byte_size, create_only=True)

    def lay_out(self, layout: Layout, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Its tensors placed as `layout` says (`lay_out_tensors`), and `arrays` written in their places."""
        placements, byte_size = layout
        if byte_size > self.byte_size:
            raise ValueError(f"{byte_size} bytes of tensors in a region of {self.byte_size}")
        self.placements = placements
        for tensor, array in arrays.items():
            shm.set_shared_memory_region(self._handle, [np.ascontiguousarray(array)], placements[tensor].offset)

    def read(self, tensor: str) -> npt.NDArray[Any]:
        """A copy of what Triton wrote in place of `tensor`: the region's next use writes over it."""
        place = self.placements[tensor]
        dtype = triton_to_np_dtype(place.datatype)
        return np.array(shm.get_contents_as_numpy(self._handle, dtype, place.shape, place.offset))

    @property
    def key(self) -> str:
        """What Triton opens (shm_open) to map it."""
        return f"/{self.name}"

    def destroy(self) -> None:
        """Unmap and unlink it here (once: again does nothing); a Triton that mapped it keeps its own
        mapping until it unregisters it."""
        if not self._destroyed:
            self._destroyed = True
            shm.destroy_shared_memory_region(self._handle)


def lay_out_tensors(arrays: Mapping[str, npt.NDArray[Any]], spaces: Mapping[str, Space] | None = None) -> Layout:
    """`arrays` (inputs) and `spaces` (outputs Triton writes) back to back from a region's start, and the
    bytes they take."""
    placements = {}
    offset = 0
    wanted = {name: (array.shape, np_to_triton_dtype(array.dtype)) for name, array in arrays.items()}
    for tensor, (shape, datatype) in (wanted | dict(spaces or {})).items():
        byte_size = math.prod(shape) * np.dtype(triton_to_np_dtype(datatype)).itemsize
        placements[tensor] = Placement(offset, byte_size, tuple(shape), datatype)
        offset += -(-byte_size // ALIGNMENT) * ALIGNMENT
    return placements, offset


class RegionPool:
    """Regions no call uses, still registered with Triton, for the next that fits; at most
    `IDLE_REGIONS` of them and `IDLE_BYTES` in all (the one idle longest goes first past either: what
    the requests of the moment use stays)."""

    def __init__(self) -> None:
        self._idle: list[Region] = []

    def take(self, byte_size: int) -> Region | None:
        """The smallest idle region of at least `byte_size`, no longer idle; None where none is."""
        fitting = [region for region in self._idle if region.byte_size >= byte_size]
        if not fitting:
            return None
        region = min(fitting, key=lambda candidate: candidate.byte_size)
        self._idle.remove(region)
        return region

    def give(self, region: Region) -> list[Region]:
        """`region` idle again; what no longer fits in the pool, for the caller to release."""
        self._idle.append(region)
        evicted = []
        while len(self._idle) > IDLE_REGIONS or sum(idle.byte_size for idle in self._idle) > IDLE_BYTES:
            evicted.append(self._idle.pop(0))
        return evicted

    def clear(self) -> list[Region]:
        """Every idle region, for the caller to release: a Triton that restarted no longer knows them."""
        idle, self._idle = self._idle, []
        return idle

"""System shared memory regions: a request's constant tensors written once, read by Triton at every step.

A denoiser's conditioning (FLUX.1's T5 states, 512 x 4096 float32 or 8 MB a sample for dev, the
pooled vector, the position ids, the guidance; SDXL's states, pooled vector and time ids; the LoRA
factors) is the same at every step of a request. Over HTTP it is serialised, sent and parsed again at
each step; a Triton on this host (the embedded one, or one sharing this host's /dev/shm) maps a
region the frontend writes once instead. Each request has a region of its own, named after this
process (`imagegen_<pid>_<random>`), so its owner is known from the name alone.

This module owns the regions on the frontend's side; frontend/triton.py registers them with Triton
and names them in each call. A region is unmapped and unlinked here as soon as its request ends:
Triton's own mapping keeps the pages for as long as a step it is running still reads them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tritonclient.utils import np_to_triton_dtype
from tritonclient.utils import shared_memory as shm

ALIGNMENT = 64
"""Each tensor starts on a cache line: Triton copies it from there into its batch."""
SHM = "/dev/shm"
HEADROOM = 64 * 1024 * 1024
"""Room left free under /dev/shm for others (Triton's Python backend stubs exchange tensors there)."""


class NoRoom(OSError):
    """/dev/shm has no room for a region: writing into an mmap past the room would kill the process
    (SIGBUS), so the caller sends the tensors another way."""


def region_prefix(pid: int | None = None) -> str:
    """How this process's regions (or process `pid`'s) are named, in Triton and under /dev/shm."""
    return f"imagegen_{os.getpid() if pid is None else pid}_"


@dataclass(frozen=True)
class Placement:
    """Where one tensor lies in a region: what an inference request names instead of sending it."""

    offset: int
    byte_size: int
    shape: tuple[int, ...]
    datatype: str
    """Triton's name of the dtype (`FP32`)."""


class Region:
    """One region of this process holding tensors back to back, written at creation.

    `name` is both Triton's name for it and its key (the file under /dev/shm). Python's
    multiprocessing resource tracker, which `tritonclient.utils.shared_memory` creates it through,
    also unlinks it should this process die without `destroy`.
    """

    def __init__(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        self.name = f"{region_prefix()}{secrets.token_hex(8)}"
        self.placements: dict[str, Placement] = {}
        offset = 0
        for tensor, array in arrays.items():
            self.placements[tensor] = Placement(offset, array.nbytes, array.shape, np_to_triton_dtype(array.dtype))
            offset += -(-array.nbytes // ALIGNMENT) * ALIGNMENT
        self.byte_size = max(offset, ALIGNMENT)
        space = os.statvfs(SHM)
        if space.f_bavail * space.f_frsize < self.byte_size + HEADROOM:
            raise NoRoom(f"{SHM} has no room for {self.byte_size} bytes")
        self._destroyed = False
        self._handle = shm.create_shared_memory_region(self.name, self.name, self.byte_size, create_only=True)
        try:
            for tensor, array in arrays.items():
                shm.set_shared_memory_region(
                    self._handle, [np.ascontiguousarray(array)], self.placements[tensor].offset
                )
        except BaseException:
            self.destroy()
            raise

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

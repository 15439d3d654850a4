"""Prompt embeddings kept by caller, model, version and prompt, so a prompt seen again skips the
tokenizer and the text encoders.

Clients send the same prompt again and again (new seeds, `n` retries, the Studio while someone tweaks
the size), and on real FLUX one T5-XXL call costs what a denoising step does. Text encoders read
each prompt alone (no row of a batch sees another), so rows cached one prompt at a time are the
rows a batched call would give. The key holds the model version the request is pinned to: a new
version may bring new text encoders, so it never reads the old one's rows; a client that names no
version (Triton picks one at every call) is never cached. The key holds the caller too (the key or
account, and the end user it names): a hit answers sooner, in `Server-Timing` and in the response's
time alike, so a cache shared by tenants would let one confirm another's exact prompt.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""About 30 prompts of real FLUX.1-dev (T5 states 512 x 4096 float32, 8 MB each), thousands of tiny."""

Encoded = tuple[tuple[npt.NDArray[np.float32], ...], npt.NDArray[np.bool_]]
"""A text-encoding stage's output: its tensors, one row per prompt, and per prompt whether a tokenizer
cut it (shape (prompts,) or (prompts, 1))."""
Encoder = Callable[[list[str]], Awaitable[Encoded]]


@dataclass(frozen=True)
class _Entry:
    rows: tuple[npt.NDArray[np.float32], ...]  # each tensor's row for the prompt, batch axis kept
    truncated: bool

    @property
    def nbytes(self) -> int:
        return sum(row.nbytes for row in self.rows)


class PromptCache:
    """Least recently used entries, up to `max_bytes` of tensors, shared by every copy of a pipeline."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, str, str], _Entry] = OrderedDict()
        self._bytes = 0

    async def encode(
        self, caller: str, model: str, version: str, prompts: list[str], encoder: Encoder
    ) -> tuple[tuple[npt.NDArray[np.float32], ...], bool]:
        """`encoder(prompts)`'s tensors (rows in the order of `prompts`) and whether any prompt was cut;
        `encoder` runs once, on the prompts not cached for this caller, or not at all."""
        if not version:
            tensors, truncated = await encoder(prompts)
            return tensors, bool(np.any(truncated))
        found = {
            prompt: entry for prompt in prompts if (entry := self._get((caller, model, version, prompt))) is not None
        }
        missing = [prompt for prompt in dict.fromkeys(prompts) if prompt not in found]
        if missing:
            tensors, truncated = await encoder(missing)
            flags = np.asarray(truncated).reshape(len(missing), -1).any(axis=1)
            for index, prompt in enumerate(missing):
                entry = _Entry(tuple(_read_only(t[index : index + 1].copy()) for t in tensors), bool(flags[index]))
                found[prompt] = entry
                self._put((caller, model, version, prompt), entry)
        entries = [found[prompt] for prompt in prompts]
        if len(entries) == 1:  # the entry's own rows: read-only, so no caller can change the cache's
            return entries[0].rows, entries[0].truncated
        rows = tuple(np.concatenate(parts) for parts in zip(*(entry.rows for entry in entries), strict=True))
        return rows, any(entry.truncated for entry in entries)

    def _get(self, key: tuple[str, str, str, str]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _put(self, key: tuple[str, str, str, str], entry: _Entry) -> None:
        if entry.nbytes > self.max_bytes or key in self._entries:
            return
        self._entries[key] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes


def _read_only(array: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    array.flags.writeable = False
    return array

"""Registered LoRA adapters (`imagegen lora add`); their files live in the state folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from frontend.store.database import Repository


@dataclass(frozen=True)
class LoraAdapter:
    """A registered LoRA adapter (`imagegen lora add`) of one pipeline's denoiser."""

    name: str
    model: str  # the pipeline name, e.g. flux-dev
    sha256: str  # of the .safetensors file, which is kept as `<state_dir>/lora/<sha256>.safetensors`
    rank: int
    layers: int  # how many of the exported LoRA layers it adapts
    created_at: float


_LORA_COLUMNS = "name, model, sha256, rank, layers, created_at"


class LoraAdapters(Repository):
    async def add(self, adapter: LoraAdapter) -> None:
        sql = f"INSERT INTO lora_adapters ({_LORA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        await self._transact(lambda tx: tx.execute(sql, dataclasses.astuple(adapter)))

    async def find(self, names: Sequence[str] | None = None) -> list[LoraAdapter]:
        """The adapters named (those that exist), or all of them, by name."""
        sql = f"SELECT {_LORA_COLUMNS} FROM lora_adapters"
        params: tuple[str, ...] = ()
        if names is not None:
            sql += f" WHERE name IN ({', '.join('?' * len(names))})" if names else " WHERE 1 = 0"
            params = tuple(names)
        rows = await self._transact(lambda tx: tx.fetchall(f"{sql} ORDER BY name", params))
        return [LoraAdapter(*row) for row in rows]

    async def remove(self, name: str) -> bool:
        """False when there is no such adapter."""
        return await self._transact(lambda tx: tx.execute("DELETE FROM lora_adapters WHERE name = ?", (name,))) == 1

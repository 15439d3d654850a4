"""API keys, stored by the hash of their secret and found by its public prefix."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from frontend.store.database import Repository, words
from frontend.store.schema import Transaction


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    """The secret's first characters, public: how an operator and the lookup identify a key."""
    secret_hash: str
    scopes: frozenset[str]
    plan: str
    created_at: float
    revoked_at: float | None = None


_KEY_COLUMNS = "id, name, prefix, secret_hash, scopes, plan, created_at, revoked_at"


class Keys(Repository):
    async def add(self, key: ApiKey) -> bool:
        """Insert `key`; False when a key with the same secret exists already (kept as it is)."""
        return await self._transact(lambda tx: _insert_key(tx, key))

    async def replace_named(self, key: ApiKey) -> list[str]:
        """Insert `key` and revoke every other active key of its name, in one transaction: the ids
        revoked. Nothing changes when a key with the same secret exists already."""
        others = "name = ? AND id <> ? AND revoked_at IS NULL"

        def work(tx: Transaction) -> list[str]:
            if not _insert_key(tx, key):
                return []
            revoked = [
                key_id for (key_id,) in tx.fetchall(f"SELECT id FROM api_keys WHERE {others}", (key.name, key.id))
            ]
            tx.execute(f"UPDATE api_keys SET revoked_at = ? WHERE {others}", (key.created_at, key.name, key.id))
            return revoked

        return await self._transact(work)

    async def active_with_prefix(self, prefix: str) -> list[ApiKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE prefix = ? AND revoked_at IS NULL"
        return [_key(row) for row in await self._transact(lambda tx: tx.fetchall(sql, (prefix,)))]

    async def active_by_id(self, key_id: str) -> ApiKey | None:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ? AND revoked_at IS NULL"
        rows = await self._transact(lambda tx: tx.fetchall(sql, (key_id,)))
        return _key(rows[0]) if rows else None

    async def all(self) -> list[ApiKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
        return [_key(row) for row in await self._transact(lambda tx: tx.fetchall(sql))]

    async def revoke(self, key_id: str) -> bool:
        """Revoke an active key; False when there is no such active key."""
        sql = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        return await self._transact(lambda tx: tx.execute(sql, (time.time(), key_id))) == 1


def _insert_key(tx: Transaction, key: ApiKey) -> bool:
    """False when a key with the same secret exists already."""
    sql = f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    params = (
        key.id,
        key.name,
        key.prefix,
        key.secret_hash,
        words(key.scopes),
        key.plan,
        key.created_at,
        key.revoked_at,
    )
    return tx.execute(sql, params) == 1


def _key(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, prefix, secret_hash, scopes, plan, created_at, revoked_at = row
    return ApiKey(key_id, name, prefix, secret_hash, frozenset(scopes.split()), plan, created_at, revoked_at)

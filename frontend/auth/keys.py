"""API keys: random secrets stored as a hash under a short public prefix, compared in constant time.

A plain SHA-256 suffices: the secrets are 256 random bits (or an operator's own of at least
MIN_SECRET_LENGTH characters), so there is nothing for a slow password hash to protect against.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

from frontend.auth.scopes import SCOPES, STUDIO_PLAN
from frontend.store.repository import ApiKey, Store

SECRET_START = "sk-ig-"
PREFIX_LENGTH = len(SECRET_START) + 8
"""The stored public prefix: the fixed start and 8 random characters, enough to tell keys apart."""
MIN_SECRET_LENGTH = 32
"""So that an operator's own secret keeps at least 18 characters beyond its public prefix."""


def new_secret() -> str:
    return SECRET_START + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_record(secret: str, scopes: Iterable[str], plan: str, name: str) -> ApiKey:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"an API key must be at least {MIN_SECRET_LENGTH} characters long")
    return ApiKey(
        id=f"key_{secrets.token_hex(6)}",
        name=name,
        prefix=secret[:PREFIX_LENGTH],
        secret_hash=hash_secret(secret),
        scopes=frozenset(scopes),
        plan=plan,
        created_at=time.time(),
    )


async def create_key(store: Store, scopes: Iterable[str], plan: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key on an existing plan, and its secret: shown once, never stored."""
    await store.plan(plan)
    secret = new_secret()
    key = key_record(secret, scopes, plan, name)
    await store.add_key(key)
    return key, secret


async def ensure_operator_key(store: Store, secret: str) -> bool:
    """Store the operator's key (`IMAGEGEN_API_KEY`, or the one generated for `make serve`) with every
    scope on the studio plan; a later start finds it, revoked or not, and leaves it as it is."""
    return await store.add_key(key_record(secret, SCOPES, STUDIO_PLAN, name="operator"))


async def find_key(store: Store, secret: str) -> ApiKey | None:
    """The active key whose secret this is."""
    digest = hash_secret(secret)
    for key in await store.active_keys_with_prefix(secret[:PREFIX_LENGTH]):
        if hmac.compare_digest(key.secret_hash, digest):
            return key
    return None

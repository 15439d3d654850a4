"""API keys: random secrets stored as a hash under a short public prefix, compared in constant time.

A plain SHA-256 suffices: the secrets are 256 random bits (an operator's own must be as strong,
`check_operator_secret`), so there is nothing for a slow password hash to protect against.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import string
import time
from collections.abc import Iterable

from frontend.auth.scopes import SCOPES, STUDIO_PLAN
from frontend.store import Store
from frontend.store.keys import ApiKey

SECRET_START = "sk-ig-"
PREFIX_LENGTH = len(SECRET_START) + 8
"""The stored public prefix: the fixed start and 8 random characters, enough to tell keys apart."""
MIN_SECRET_LENGTH = 32
"""So that an operator's own secret keeps at least 18 characters beyond its public prefix."""
MIN_STRENGTH_BITS = 240
"""A generated secret holds 256 random bits (`secrets.token_urlsafe(32)`); an operator's own must come
close by the estimate of `check_operator_secret`, whose margin lets every random 256-bit secret pass
(64 hex digits: 331 bits; 43 base64url characters with no digit or symbol: 245)."""
MIN_DISTINCT_CHARACTERS = 10
"""Long runs of few characters ("aaaa...") are refused too; 64 random hex digits hold 16."""
OPERATOR = "operator"
"""The name of the operator's key: storing a new one revokes the earlier ones."""
CHARACTER_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits)
"""Sizes for the strength estimate; anything else counts as one class of 32 (ASCII punctuation)."""


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


def check_operator_secret(secret: str) -> str:
    """`secret`, or ValueError when it is weaker than a generated key: its length times log2 of the
    size of the character classes it draws from (lowercase, uppercase, digits, other) must reach
    MIN_STRENGTH_BITS, with MIN_DISTINCT_CHARACTERS different characters. A leaked store holds the
    key's SHA-256, cheap to guess from when the key is short or plain: `openssl rand -hex 32` passes,
    a word or a UUID does not."""
    alphabet = sum(len(chars) for chars in CHARACTER_CLASSES if any(c in chars for c in secret))
    alphabet += 32 if any(not any(c in chars for chars in CHARACTER_CLASSES) for c in secret) else 0
    bits = len(secret) * math.log2(max(alphabet, 1))
    if bits < MIN_STRENGTH_BITS or len(set(secret)) < MIN_DISTINCT_CHARACTERS:
        raise ValueError(
            f"IMAGEGEN_API_KEY is weaker than a generated key: {len(secret)} characters, {len(set(secret))} "
            f"distinct, about {bits:.0f} bits (needed: {MIN_STRENGTH_BITS} bits, {MIN_DISTINCT_CHARACTERS} "
            "distinct characters). Use e.g. `openssl rand -hex 32`, or leave it unset to have one generated"
        )
    return secret


async def create_key(store: Store, scopes: Iterable[str], plan: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key on an existing plan, and its secret: shown once, never stored."""
    if name == OPERATOR:
        raise ValueError(f"the name {OPERATOR!r} is the operator's key's: a new IMAGEGEN_API_KEY revokes it")
    await store.plans.named(plan)
    secret = new_secret()
    key = key_record(secret, scopes, plan, name)
    await store.keys.add(key)
    return key, secret


async def ensure_operator_key(store: Store, secret: str) -> list[str]:
    """Store the operator's key (`IMAGEGEN_API_KEY`, or the one generated for `make serve`) with every
    scope on the studio plan, revoking the operator's earlier keys: the ids revoked. A later start
    with the same key finds it, revoked or not, and changes nothing."""
    return await store.keys.replace_named(key_record(secret, SCOPES, STUDIO_PLAN, name=OPERATOR))


async def find_key(store: Store, secret: str) -> ApiKey | None:
    """The active key whose secret this is."""
    digest = hash_secret(secret)
    for key in await store.keys.active_with_prefix(secret[:PREFIX_LENGTH]):
        if hmac.compare_digest(key.secret_hash, digest):
            return key
    return None

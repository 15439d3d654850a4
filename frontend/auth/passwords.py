"""Account passwords: salted scrypt from the standard library, its parameters stored with the hash
so that they can be raised later without invalidating existing passwords."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
"""OWASP's recommended minimum for scrypt: 16 MiB of memory, about 50 ms per check here."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches `stored`; None (no such account) costs the same time and fails,
    so timing does not tell which usernames exist."""
    _, n, r, p, salt, digest = (stored or _unmatchable_hash()).split("$")
    computed = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    return stored is not None and hmac.compare_digest(computed, bytes.fromhex(digest))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n * p, dklen=32)


@functools.cache
def _unmatchable_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))

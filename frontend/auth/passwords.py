"""Account passwords: salted scrypt from the standard library, its parameters stored with the hash
so that they can be raised without invalidating existing passwords (`needs_rehash`).

Hashing runs in a pool of its own, HASHING_THREADS wide: a flood of sign-ins then queues for these
threads and never for the default executor that generation uses (decoding, encoding, serialising),
and the memory scrypt takes at once stays bounded (HASHING_THREADS x 128 MiB).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
"""OWASP's recommendation for scrypt (Password Storage Cheat Sheet): 128 MiB of memory, about 0.7 s
per check on this machine's CPU."""
HASHING_THREADS = 2
_hashing = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="password-hash")


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


def needs_rehash(stored: str) -> bool:
    """Whether `stored` was made with other parameters than today's: re-hashed at the next sign-in,
    the one moment the password is known."""
    return stored.split("$")[1:4] != [str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P)]


async def hashed(password: str) -> str:
    """`hash_password` in the hashing pool."""
    return await asyncio.get_running_loop().run_in_executor(_hashing, hash_password, password)


async def verified(password: str, stored: str | None) -> bool:
    """`verify_password` in the hashing pool."""
    return await asyncio.get_running_loop().run_in_executor(_hashing, verify_password, password, stored)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n * p, dklen=32)


@functools.cache
def _unmatchable_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))

"""Encryption at rest with a key the store does not hold: a copy of the database alone reveals nothing sealed.

A sealed value is AES-256-GCM (authenticated: a changed byte is refused, never read as other data)
over the plaintext, with the *context* it belongs to as associated data: a value sealed for
`job:7f3a:result` opens only as that, so a sealed column copied to another row or another purpose
is refused. It is stored as text (`s1.` and URL-safe base64 of key id, nonce and ciphertext), as the
store's TEXT columns take it on SQLite and PostgreSQL alike.

The key is `IMAGEGEN_SECRETS_KEY` (32 bytes in base64: `openssl rand -base64 32`), which replicas
sharing a PostgreSQL store must share; the embedded default is a key file made on first run, mode
0600, in the state folder beside the SQLite file (never inside it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from frontend.settings import Settings

KEY_BYTES = 32
NONCE_BYTES = 12
"""GCM's standard nonce, random per value: safe for far more values than a store holds (2**32)."""
KEY_ID_BYTES = 4
PREFIX = "s1."
KEY_FILE = "secrets.key"


class SealError(ValueError):
    """A sealed value that does not open: another key, another context, or changed bytes."""


class Sealer:
    """Seals and opens values with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a sealing key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        # Names the key in each value, so a value sealed under another key says so rather than
        # failing like a tampered one; 4 bytes of a hash reveal nothing usable about 32 random ones.
        self._key_id = hashlib.sha256(b"imagegen sealing key id\0" + key).digest()[:KEY_ID_BYTES]

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        """The operator's key (`IMAGEGEN_SECRETS_KEY`), else the embedded default's key file.

        Replicas sharing a PostgreSQL store must open each other's values, which a key file per
        replica would not allow: there the key must be given."""
        if settings.secrets_key:
            return cls(parse_key(settings.secrets_key, "IMAGEGEN_SECRETS_KEY"))
        if settings.store_location.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "IMAGEGEN_SECRETS_KEY is required with a PostgreSQL store: every replica seals and opens "
                "the same values (generate one with `openssl rand -base64 32`)"
            )
        return cls(kept_key(settings.state_dir / KEY_FILE))

    def seal(self, data: bytes, context: str) -> str:
        """`data` encrypted for `context` (e.g. `job:<id>:result`), as text for a store column."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, data, _associated(context))
        return PREFIX + base64.urlsafe_b64encode(self._key_id + nonce + sealed).decode("ascii")

    def unseal(self, sealed: str, context: str) -> bytes:
        """The data sealed for `context`; SealError for anything else."""
        if not sealed.startswith(PREFIX):
            raise SealError("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(PREFIX) :].encode("ascii"))
        except (binascii.Error, UnicodeEncodeError):
            raise SealError("not a sealed value") from None
        key_id, nonce, ciphertext = (
            raw[:KEY_ID_BYTES],
            raw[KEY_ID_BYTES : KEY_ID_BYTES + NONCE_BYTES],
            raw[KEY_ID_BYTES + NONCE_BYTES :],
        )
        if key_id != self._key_id:
            raise SealError("sealed under another key than IMAGEGEN_SECRETS_KEY (or the state folder's key file)")
        try:
            return self._aead.decrypt(nonce, ciphertext, _associated(context))
        except InvalidTag:
            raise SealError(f"does not open as {context!r}: changed, or sealed for another context") from None


def _associated(context: str) -> bytes:
    """What each value is bound to: the format's version and its context."""
    return PREFIX.encode("ascii") + context.encode("utf-8")


def new_key() -> str:
    """A fresh key, in the form `IMAGEGEN_SECRETS_KEY` takes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def parse_key(text: str, origin: str) -> bytes:
    """32 bytes from standard or URL-safe base64 (what `openssl rand -base64 32` prints)."""
    try:
        key = base64.b64decode(text.strip().replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error:
        raise ValueError(f"{origin} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{origin} holds {len(key)} bytes; a sealing key is {KEY_BYTES} (`openssl rand -base64 32`)")
    return key


def kept_key(path: Path) -> bytes:
    """The key in `path`, made there (mode 0600) on the first call.

    The file appears whole or not at all (written aside, then linked into place), so processes
    starting together agree on one key and none reads a half-written file."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(new_key() + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.link(aside, path)
        except FileExistsError:
            pass  # another process made it first: its key is the one
        finally:
            aside.unlink()
    if path.stat().st_mode & 0o077:
        raise ValueError(f"{path} is readable by others than its owner: chmod 600 it")
    return parse_key(path.read_text(), str(path))

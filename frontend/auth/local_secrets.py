"""Secrets kept in the state directory, readable by its owner only: made once, then reused."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path


def owner_only_folder(path: Path) -> Path:
    """`path` made, or made private again (0700): the state directory holds the store, with the
    hashes of keys, passwords and sessions, and the session secret, none for other local users."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`, written there by `make()` on the first call."""
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = make()
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


def random_token() -> str:
    return secrets.token_urlsafe(32)

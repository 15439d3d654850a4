"""Accounts: what a username and a password may be, and signing in with them.

The same rules hold at `imagegen accounts` and at `POST /v1/auth/login`, so every account that can
be made can sign in, and a sign-in is refused (400) before it reaches the store or the hash.
"""

from __future__ import annotations

from frontend.auth.passwords import hashed, needs_rehash, verified
from frontend.store import Store
from frontend.store.accounts import Account

MAX_USERNAME_LENGTH = 64
MIN_PASSWORD_LENGTH = 8
"""For new passwords (`imagegen accounts create|passwd`); a sign-in's shorter one simply fails."""
MAX_PASSWORD_LENGTH = 1024
"""Room for any passphrase; a bound, so that a sign-in cannot have megabytes hashed."""


def check_username(username: str) -> str:
    """`username`, or ValueError: 1 to 64 printable characters. Control, format and surrogate
    characters are refused: PostgreSQL cannot store a NUL, UTF-8 cannot encode a lone surrogate, and
    invisible characters would let two names look alike."""
    if not 1 <= len(username) <= MAX_USERNAME_LENGTH:
        raise ValueError(f"a username is 1 to {MAX_USERNAME_LENGTH} characters long")
    if not username.isprintable():
        raise ValueError("a username holds printable characters only (no control or invisible characters)")
    return username


def check_password(password: str, min_length: int = 1) -> str:
    """`password`, or ValueError: `min_length` to 1024 characters of text that UTF-8 can encode."""
    if not min_length <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password is {min_length} to {MAX_PASSWORD_LENGTH} characters long")
    try:
        password.encode()
    except UnicodeEncodeError:
        raise ValueError("a password must be valid Unicode text (no lone surrogates)") from None
    return password


async def sign_in(store: Store, username: str, password: str) -> Account | None:
    """The account these credentials open, or None: an unknown username, a wrong password and a
    disabled account cost the same scrypt and are told apart by nobody. A hash made with older
    parameters is replaced by one with today's, the only moment the password is known."""
    account = await store.accounts.named(username)
    matches = await verified(password, account.password_hash if account else None)
    if account is None or not matches or account.disabled_at is not None:
        return None
    if needs_rehash(account.password_hash):
        await store.accounts.rehash_password(account.id, account.password_hash, await hashed(password))
    return account

"""Browser sessions: signed cookies that expire and end (at sign-out, and when the account is
disabled or its password changes), CSRF tokens bound to their session, passwords."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.responses import Response

from frontend.auth.passwords import hash_password, needs_rehash, verify_password
from frontend.auth.scopes import IMAGES
from frontend.auth.sessions import CSRF_HEADER, Sessions
from frontend.errors import CsrfRejected
from frontend.store import Store, connect
from frontend.store.accounts import Account

ALICE = Account("acct_alice", "alice", "unused", frozenset({IMAGES}), "studio", 0.0)


@pytest.fixture
def store(store_location: str) -> Iterator[Store]:
    opened = asyncio.run(connect(store_location))
    asyncio.run(opened.accounts.add(ALICE))
    yield opened
    opened.close()


def cookie_of(sessions: Sessions) -> tuple[str, str]:
    """(session cookie value, CSRF token) of a new session, read from the response's Set-Cookie headers."""
    session = asyncio.run(sessions.start(ALICE))
    response = Response()
    sessions.set_cookies(response, session, secure=False)
    cookies = dict(header.split(";")[0].split("=", 1) for header in response.headers.getlist("set-cookie"))
    return cookies["imagegen_session"], cookies["imagegen_csrf"]


def test_a_session_cookie_resumes_until_it_ends(store: Store) -> None:
    sessions = Sessions(store, "secret", ttl_seconds=60)
    cookie, _ = cookie_of(sessions)
    session = asyncio.run(sessions.resume(cookie))
    assert session is not None and session.account == ALICE
    asyncio.run(sessions.end(session))
    assert asyncio.run(sessions.resume(cookie)) is None


@pytest.mark.parametrize("change", ["disable", "passwd", "end-sessions"])
def test_disabling_an_account_changing_its_password_or_ending_its_sessions_ends_every_session(
    store: Store, change: str
) -> None:
    sessions = Sessions(store, "secret", ttl_seconds=60)
    cookies = [cookie_of(sessions)[0] for _ in range(2)]
    changes = {
        "disable": lambda: store.accounts.set_disabled("alice", 1.0),
        "passwd": lambda: store.accounts.replace_password("alice", "another hash"),
        "end-sessions": lambda: store.accounts.end_sessions("alice"),
    }
    assert asyncio.run(changes[change]()) == 2
    assert [asyncio.run(sessions.resume(cookie)) for cookie in cookies] == [None, None]


def test_a_session_made_while_disabled_never_resumes(store: Store) -> None:
    """One made while the account is disabled (another frontend's sign-in racing the change) is refused,
    and ended when the account is enabled again."""
    sessions = Sessions(store, "secret", ttl_seconds=60)
    asyncio.run(store.accounts.set_disabled("alice", 1.0))
    cookie, _ = cookie_of(sessions)
    assert asyncio.run(sessions.resume(cookie)) is None
    assert asyncio.run(store.accounts.set_disabled("alice", None)) == 1
    assert asyncio.run(sessions.resume(cookie)) is None
    assert asyncio.run(sessions.resume(cookie_of(sessions)[0])) is not None


def test_changes_to_an_unknown_account_say_so(store: Store) -> None:
    assert asyncio.run(store.accounts.set_disabled("nobody", 1.0)) is None
    assert asyncio.run(store.accounts.replace_password("nobody", "hash")) is None
    assert asyncio.run(store.accounts.end_sessions("nobody")) is None


def test_a_rehash_never_overwrites_a_password_changed_meanwhile(store: Store) -> None:
    asyncio.run(store.accounts.replace_password("alice", "new password's hash"))
    assert not asyncio.run(store.accounts.rehash_password(ALICE.id, ALICE.password_hash, "old password's rehash"))
    assert asyncio.run(store.accounts.rehash_password(ALICE.id, "new password's hash", "new password's rehash"))
    account = asyncio.run(store.accounts.named("alice"))
    assert account is not None and account.password_hash == "new password's rehash"


@pytest.mark.parametrize("tamper", ["expiry", "signature", "secret"])
def test_a_forged_cookie_is_refused(store: Store, tamper: str) -> None:
    sessions = Sessions(store, "secret", ttl_seconds=60)
    cookie, _ = cookie_of(sessions)
    token, expires, signature = cookie.split(".")
    forged = {
        "expiry": (Sessions(store, "secret", 60), f"{token}.{int(expires) + 3600}.{signature}"),
        "signature": (Sessions(store, "secret", 60), f"{token}.{expires}.{signature[:-2]}AA"),
        "secret": (Sessions(store, "another secret", 60), cookie),
    }
    checker, value = forged[tamper]
    assert asyncio.run(checker.resume(value)) is None


def test_an_expired_session_is_refused(store: Store) -> None:
    sessions = Sessions(store, "secret", ttl_seconds=0)
    cookie, _ = cookie_of(sessions)
    assert asyncio.run(sessions.resume(cookie)) is None


def test_the_csrf_token_belongs_to_its_session(store: Store) -> None:
    sessions = Sessions(store, "secret", ttl_seconds=60)
    first, first_csrf = cookie_of(sessions)
    _, second_csrf = cookie_of(sessions)
    session = asyncio.run(sessions.resume(first))
    assert session is not None

    def post(token: str | None) -> Request:
        headers = [] if token is None else [(CSRF_HEADER.lower().encode(), token.encode())]
        return Request({"type": "http", "method": "POST", "headers": headers})

    sessions.check_csrf(post(first_csrf), session)
    for token in (None, second_csrf, "é"):
        with pytest.raises(CsrfRejected):
            sessions.check_csrf(post(token), session)


def test_session_cookie_is_http_only_and_same_site(store: Store) -> None:
    sessions = Sessions(store, "secret", ttl_seconds=60)
    session = asyncio.run(sessions.start(ALICE))
    for secure in (False, True):
        response = Response()
        sessions.set_cookies(response, session, secure=secure)
        session_cookie, csrf_cookie = (header.lower() for header in response.headers.getlist("set-cookie"))
        assert "httponly" in session_cookie and "httponly" not in csrf_cookie
        assert all(
            "samesite=lax" in cookie and ("secure" in cookie) == secure for cookie in (session_cookie, csrf_cookie)
        )


def test_a_password_matches_only_its_hash() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$131072$8$1$")  # OWASP's recommended cost
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hose", stored)
    assert not verify_password("correct horse", None)
    assert "correct horse" not in stored
    assert not needs_rehash(stored)


def test_a_hash_with_older_parameters_still_matches_and_needs_rehash() -> None:
    salt = bytes(16)
    digest = hashlib.scrypt(b"correct horse", salt=salt, n=2**14, r=8, p=1, dklen=32)
    stored = f"scrypt${2**14}$8$1${salt.hex()}${digest.hex()}"
    assert verify_password("correct horse", stored)
    assert needs_rehash(stored)

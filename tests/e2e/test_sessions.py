"""Browser sessions over a socket: login, the signed cookie, CSRF on cookie POSTs, logout, expiry.

Each test signs in with an account of its own (`alice`, `strict_alice`): sign-ins are limited per username, so
tests sharing one would spend each other's attempts.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.harness import Server, imagegen

PASSWORD = "correct horse battery"
VALID = {"prompt": "a red fox", "size": "256x256"}


def unique_username(name: str) -> str:
    """A username no other test uses, on any server."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


def create_account(server: Server, name: str) -> str:
    username = unique_username(name)
    imagegen(server, "accounts", "create", username, "--plan", "studio", "--password-stdin", stdin=PASSWORD)
    return username


@pytest.fixture
def alice(server: Server) -> str:
    """A studio account of this test's own on the shared server."""
    return create_account(server, "alice")


@pytest.fixture
def strict_alice(strict_server: Server) -> str:
    """A studio account of this test's own on the strict server."""
    return create_account(strict_server, "alice")


def signed_in(server: Server, username: str) -> tuple[httpx.Client, str]:
    """A browser-like client holding the session cookies, and the CSRF token login answered."""
    browser = httpx.Client(base_url=server.base_url, timeout=120)
    response = browser.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    assert response.json()["csrf_token"] == browser.cookies["imagegen_csrf"]
    return browser, response.json()["csrf_token"]


def test_a_cookie_post_with_the_csrf_token_generates(server: Server, alice: str) -> None:
    browser, csrf = signed_in(server, alice)
    response = browser.post("/images/generations", json=VALID, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["b64_json"]


@pytest.mark.parametrize("headers", [{}, {"X-CSRF-Token": "forged"}], ids=["no-token", "wrong-token"])
def test_a_cookie_post_without_the_csrf_token_is_refused(server: Server, alice: str, headers: dict[str, str]) -> None:
    browser, _ = signed_in(server, alice)
    response = browser.post("/images/generations", json=VALID, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "AUTH_1003")
    assert "data" not in response.json()


def test_a_cookie_get_needs_no_csrf_token(server: Server, alice: str) -> None:
    browser, _ = signed_in(server, alice)
    assert browser.get("/models").status_code == 200


@pytest.mark.parametrize("known", [True, False], ids=["wrong-password", "unknown-user"])
def test_a_wrong_password_or_unknown_user_is_401(server: Server, alice: str, known: bool) -> None:
    credentials = (
        {"username": alice, "password": "wrong"} if known else {"username": unique_username("bob"), "password": "x"}
    )
    response = httpx.post(f"{server.base_url}/auth/login", json=credentials)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "AUTH_1001")
    assert "set-cookie" not in response.headers


def test_logout_ends_the_session_for_good(server: Server, alice: str) -> None:
    browser, csrf = signed_in(server, alice)
    cookie = browser.cookies["imagegen_session"]
    assert browser.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert "imagegen_session" not in browser.cookies
    replayed = httpx.get(f"{server.base_url}/models", cookies={"imagegen_session": cookie})
    assert (replayed.status_code, replayed.json()["error"]["code"]) == (401, "AUTH_1001")


@pytest.mark.parametrize(("forwarded", "secure"), [({}, False), ({"X-Forwarded-Proto": "https"}, True)])
def test_the_session_cookie_is_http_only_same_site_and_secure_behind_https(
    server: Server, alice: str, forwarded: dict[str, str], secure: bool
) -> None:
    response = httpx.post(
        f"{server.base_url}/auth/login", json={"username": alice, "password": PASSWORD}, headers=forwarded
    )
    session_cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("imagegen_session="))
    attributes = {part.strip().split("=")[0].lower() for part in session_cookie.split(";")[1:]}
    assert {"httponly", "samesite", "max-age"} <= attributes
    assert "samesite=lax" in session_cookie.lower()
    assert ("secure" in attributes) == secure


def test_an_expired_session_is_401(strict_server: Server, strict_alice: str) -> None:
    browser, csrf = signed_in(strict_server, strict_alice)
    # Sent by hand: a browser would drop the cookie itself once its Max-Age has passed.
    headers = {"Cookie": f"imagegen_session={browser.cookies['imagegen_session']}", "X-CSRF-Token": csrf}
    time.sleep(1.1)  # the strict server's sessions last 1 s
    response = httpx.get(f"{strict_server.base_url}/models", headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "AUTH_1001")
    assert "expired" in response.json()["error"]["message"]


def test_password_guessing_is_refused_after_ten_attempts_a_minute(server: Server) -> None:
    """The default IMAGEGEN_SIGN_INS_PER_MINUTE: the eleventh attempt gets no answer about the password,
    even the right one; other usernames are not held back."""
    dave = create_account(server, "dave")
    url = f"{server.base_url}/auth/login"
    guesses = [httpx.post(url, json={"username": dave, "password": f"guess {i}"}) for i in range(10)]
    assert {response.status_code for response in guesses} == {401}
    response = httpx.post(url, json={"username": dave, "password": PASSWORD})
    assert (response.status_code, response.json()["error"]["code"]) == (429, "RATE_4290")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "set-cookie" not in response.headers
    other = httpx.post(url, json={"username": unique_username("erin"), "password": "x"})
    assert other.status_code == 401

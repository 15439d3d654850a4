"""Credentials and accounts under attack (issue 16), against the real `imagegen serve`: sign-ins
bounded before they cost anything, rate-limit rows that leave with their window, sign-in limits per
client address, operator key rotation, a private state folder, and accounts that can be disabled,
given a new password and signed out everywhere.

Every sign-in comes from a loopback address of its own (127.0.0.x), so that one test's attempts never
count against another's limits, whatever the order the tests run in."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from frontend.store import connect
from tests.harness import Server, embedded_triton_secret, embedded_triton_url, imagegen, serving
from tests.postgres import PostgresCluster

PASSWORD, NEW_PASSWORD = "correct horse battery", "staple battery horse"
LIMITS = {"IMAGEGEN_SIGN_INS_PER_MINUTE": "2", "IMAGEGEN_SIGN_INS_PER_ADDRESS": "3"}
"""Two attempts per username from one address, three per address: each attempt costs a full scrypt."""
LONG_PAST = ("key_gone", "sign-in:ghost", "sign-in-address:203.0.113.9")
"""Rate-limit rows of windows an hour past, written before the server starts."""
CURRENT_HASH = "scrypt$131072$8$1$"
_addresses = (f"127.0.0.{host}" for host in itertools.count(10))


def fresh_address() -> str:
    return next(_addresses)


@pytest.fixture(scope="module")
def secured(schnell_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on a state folder as earlier versions left it: folder and database readable by every
    local user, and rate-limit rows of windows long past."""
    state = tmp_path_factory.mktemp("secured")
    database = state / "imagegen.db"
    asyncio.run(connect(str(database))).close()
    hour_ago = time.time() - 3600
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.executemany(
            "INSERT INTO rate_limit_admissions (id, principal, admitted_at) VALUES (?, ?, ?)",
            [(f"adm_{i}", principal, hour_ago) for i, principal in enumerate(LONG_PAST)],
        )
        db.executemany(
            "INSERT INTO rate_limit_principals (principal, last_request_at) VALUES (?, ?)",
            [(principal, hour_ago) for principal in LONG_PAST],
        )
    state.chmod(0o755)
    database.chmod(0o644)
    with serving(schnell_repository, state, settings=LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_frontend(
    secured: Server, schnell_repository: Path, postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A frontend on a PostgreSQL store, using the first server's Triton."""
    settings = {"IMAGEGEN_STORE": postgres.new_database(), **triton_of(secured)}
    with serving(schnell_repository, tmp_path_factory.mktemp("postgres-frontend"), settings=settings) as server:
        yield server


def triton_of(server: Server) -> dict[str, str]:
    """The settings of a frontend that uses `server`'s embedded Triton, which starts in seconds."""
    return {
        "IMAGEGEN_TRITON_URL": embedded_triton_url(server),
        "IMAGEGEN_TRITON_SECRET": embedded_triton_secret(server),
    }


def browser(server: Server, address: str) -> httpx.Client:
    """A client whose connections come from `address`."""
    return httpx.Client(base_url=server.base_url, transport=httpx.HTTPTransport(local_address=address), timeout=120)


def sign_in(client: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/auth/login", json={"username": username, "password": password})


def signed_in(server: Server, username: str, password: str = PASSWORD) -> httpx.Client:
    client = browser(server, fresh_address())
    assert sign_in(client, username, password).status_code == 200
    return client


def error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def create_account(server: Server, username: str) -> None:
    imagegen(server, "accounts", "create", username, "--plan", "studio", "--password-stdin", stdin=PASSWORD)


def query(server: Server, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of the server's SQLite store, read beside it as another local process would."""
    with contextlib.closing(sqlite3.connect(server.state_dir / "imagegen.db")) as db:
        return db.execute(sql, params).fetchall()


def password_hash(server: Server, username: str) -> str:
    [(stored,)] = query(server, "SELECT password_hash FROM accounts WHERE username = ?", (username,))
    return str(stored)


# Item 1 (and 7): sign-ins bounded before they cost anything, rows that leave with their window.


@pytest.mark.parametrize(
    ("username", "password", "param"),
    [
        ("a" * 1024 * 1024, PASSWORD, "username"),
        ("alice", "p" * 1025, "password"),
        ("al\x00ice", PASSWORD, "username"),
        ("al\u200bice", PASSWORD, "username"),
    ],
    ids=["1-MiB-username", "long-password", "nul-byte", "invisible-character"],
)
def test_an_overlong_or_unprintable_username_or_password_is_400_and_stores_nothing(
    secured: Server, username: str, password: str, param: str
) -> None:
    address = fresh_address()
    response = sign_in(browser(secured, address), username, password)
    assert (*error(response), response.json()["error"]["param"]) == (400, "VALIDATION_4004", param)
    counted = "SELECT principal FROM rate_limit_principals WHERE principal = ? OR length(principal) > 100"
    assert query(secured, counted, (f"sign-in-address:{address}",)) == []


def test_a_nul_byte_in_a_username_is_400_on_postgresql_too(postgres_frontend: Server) -> None:
    response = sign_in(browser(postgres_frontend, fresh_address()), "al\x00ice")
    assert (*error(response), response.json()["error"]["param"]) == (400, "VALIDATION_4004", "username")


def test_rate_limit_rows_of_windows_long_past_are_deleted(secured: Server) -> None:
    """Whoever they counted (a key, a username, an address): the first admission of a frontend sweeps them."""
    assert sign_in(browser(secured, fresh_address()), "nobody").status_code == 401
    long_past = time.time() - 3000
    assert query(secured, "SELECT principal FROM rate_limit_admissions WHERE admitted_at < ?", (long_past,)) == []
    assert query(secured, "SELECT principal FROM rate_limit_principals WHERE last_request_at < ?", (long_past,)) == []


# Item 3: sign-in limits per client address as well as per username.


def test_wrong_passwords_from_one_address_do_not_lock_the_owner_out_elsewhere(secured: Server) -> None:
    create_account(secured, "carol")
    guesser = browser(secured, fresh_address())
    assert [sign_in(guesser, "carol", f"guess {i}").status_code for i in range(2)] == [401, 401]
    refused = sign_in(guesser, "carol")
    assert error(refused) == (429, "RATE_4290") and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert sign_in(browser(secured, fresh_address()), "carol").status_code == 200


def test_one_address_is_limited_whatever_the_usernames_it_tries(secured: Server) -> None:
    sprayer = browser(secured, fresh_address())
    assert [sign_in(sprayer, f"nobody{i}").status_code for i in range(3)] == [401, 401, 401]
    refused = sign_in(sprayer, "nobody3")
    assert error(refused) == (429, "RATE_4290") and "from this address" in refused.json()["error"]["message"]
    assert sign_in(browser(secured, fresh_address()), "nobody3").status_code == 401


# Item 9: operator key rotation, and a generated key printed only when it is made.


def models(server: Server, key: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_a_new_operator_key_revokes_the_old_one_and_a_generated_key_is_printed_once(
    secured: Server, schnell_repository: Path, tmp_path: Path
) -> None:
    triton = triton_of(secured)
    generated_key = {**triton, "IMAGEGEN_API_KEY": ""}
    with serving(schnell_repository, tmp_path, settings=generated_key) as first:
        generated = (tmp_path / "api_key").read_text().strip()
        assert generated in first.log.read_text()
    with serving(schnell_repository, tmp_path, settings=generated_key) as again:
        assert generated not in again.log.read_text()
        assert models(again, generated).status_code == 200
    rotated = "sk-rotated-" + hashlib.sha256(b"the operator's next key").hexdigest()
    with serving(schnell_repository, tmp_path, api_key=rotated, settings=triton) as server:
        assert error(models(server, generated)) == (401, "AUTH_1001")
        assert models(server, rotated).status_code == 200


# Item 10: the state folder and the database are the owner's alone, fixed on start.


def test_the_state_folder_and_the_store_files_are_readable_by_their_owner_only(secured: Server) -> None:
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in secured.state_dir.iterdir()}
    assert stat.S_IMODE(secured.state_dir.stat().st_mode) == 0o700
    private = ("imagegen.db", "imagegen.db-wal", "imagegen.db-shm", "session_secret")
    assert {name: modes[name] for name in private} == dict.fromkeys(private, 0o600)


# Item 11: accounts disabled, given a new password, signed out everywhere; scrypt's cost; a strong key.


def test_a_disabled_account_can_neither_sign_in_nor_use_its_session_until_enabled(secured: Server) -> None:
    create_account(secured, "dora")
    session = signed_in(secured, "dora")
    imagegen(secured, "accounts", "disable", "dora")
    assert error(session.get("/models")) == (401, "AUTH_1001")
    assert error(sign_in(browser(secured, fresh_address()), "dora")) == (401, "AUTH_1001")
    imagegen(secured, "accounts", "enable", "dora")
    assert signed_in(secured, "dora").get("/models").status_code == 200


def test_a_new_password_ends_the_accounts_sessions_and_replaces_the_old_one(secured: Server) -> None:
    create_account(secured, "erin")
    session = signed_in(secured, "erin")
    imagegen(secured, "accounts", "passwd", "erin", "--password-stdin", stdin=NEW_PASSWORD)
    assert error(session.get("/models")) == (401, "AUTH_1001")
    assert error(sign_in(browser(secured, fresh_address()), "erin")) == (401, "AUTH_1001")
    assert signed_in(secured, "erin", NEW_PASSWORD).get("/models").status_code == 200


def test_end_sessions_signs_an_account_out_everywhere(secured: Server) -> None:
    create_account(secured, "fay")
    session = signed_in(secured, "fay")
    imagegen(secured, "accounts", "end-sessions", "fay")
    assert error(session.get("/models")) == (401, "AUTH_1001")


def test_passwords_are_hashed_at_owasps_cost_and_older_hashes_replaced_at_sign_in(secured: Server) -> None:
    create_account(secured, "gus")
    assert password_hash(secured, "gus").startswith(CURRENT_HASH)
    salt = bytes(16)
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    with contextlib.closing(sqlite3.connect(secured.state_dir / "imagegen.db")) as db, db:
        older = f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"
        db.execute("UPDATE accounts SET password_hash = ? WHERE username = 'gus'", (older,))
    signed_in(secured, "gus")
    assert password_hash(secured, "gus").startswith(CURRENT_HASH)
    assert signed_in(secured, "gus").get("/models").status_code == 200


def test_an_operator_key_weaker_than_a_generated_one_is_refused_at_start(
    schnell_repository: Path, tmp_path: Path
) -> None:
    weak = "sk-test-imagegen-0123456789abcdef"
    with pytest.raises(RuntimeError, match="weaker than a generated key"), serving(schnell_repository, tmp_path, weak):
        pass

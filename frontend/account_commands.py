"""`imagegen accounts create|list|disable|enable|passwd|end-sessions`: browser sign-in accounts,
safe while serving.

Disabling an account, changing its password or ending its sessions takes effect at the next request
of every session: the store is asked on each one, so no frontend keeps a session alive.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from frontend.admin import ALL_SCOPES, format_date, on_store, print_table
from frontend.auth.accounts import MIN_PASSWORD_LENGTH, check_password, check_username
from frontend.auth.passwords import hashed
from frontend.auth.scopes import ADMIN_MODELS, SCOPES, parse_names
from frontend.settings import Settings
from frontend.store import Store
from frontend.store.accounts import Account

COMMAND = "accounts"
PERSON_SCOPES = ",".join(sorted(SCOPES - {ADMIN_MODELS}))
"""An account's default: a person signing in to the Studio does not roll out models."""


def add_commands(commands: Any) -> None:
    """Add `accounts` to `imagegen`'s subparsers."""
    accounts = commands.add_parser("accounts", help="browser sign-in accounts").add_subparsers(
        dest="action", required=True
    )
    create = accounts.add_parser("create", help="add an account; asks for its password")
    create.add_argument("username")
    create.add_argument("--plan", required=True)
    create.add_argument(
        "--scopes", default=PERSON_SCOPES, help=f"comma-separated, of: {ALL_SCOPES} (default: {PERSON_SCOPES})"
    )
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    accounts.add_parser("list")
    accounts.add_parser("disable", help="refuse its sign-ins and end its sessions").add_argument("username")
    accounts.add_parser("enable", help="allow its sign-ins again").add_argument("username")
    passwd = accounts.add_parser("passwd", help="set a new password; ends its sessions")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    accounts.add_parser("end-sessions", help="sign it out everywhere").add_argument("username")


def run(args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(on_store(settings, lambda store: HANDLERS[args.action](store, args)))


async def create(store: Store, args: argparse.Namespace) -> None:
    username = check_username(args.username)
    scopes = parse_names(args.scopes, SCOPES, "scopes")
    await store.plans.named(args.plan)
    account = Account(
        id=f"acct_{secrets.token_hex(6)}",
        username=username,
        password_hash=await hashed(_read_password(args.password_stdin)),
        scopes=scopes,
        plan=args.plan,
        created_at=time.time(),
    )
    await store.accounts.add(account)
    print(f"Created account {account.username} ({account.id}, plan {account.plan}).")


async def list_accounts(store: Store, args: argparse.Namespace) -> None:
    rows = [
        [
            account.id,
            account.username,
            account.plan,
            ",".join(sorted(account.scopes)),
            format_date(account.created_at),
            format_date(account.disabled_at) if account.disabled_at else "",
        ]
        for account in await store.accounts.all()
    ]
    print_table(["ID", "USERNAME", "PLAN", "SCOPES", "CREATED", "DISABLED"], rows)


async def disable(store: Store, args: argparse.Namespace) -> None:
    ended = _found(args.username, await store.accounts.set_disabled(args.username, time.time()))
    print(f"Disabled {args.username}; ended {ended} sessions.")


async def enable(store: Store, args: argparse.Namespace) -> None:
    _found(args.username, await store.accounts.set_disabled(args.username, None))
    print(f"Enabled {args.username}.")


async def passwd(store: Store, args: argparse.Namespace) -> None:
    if await store.accounts.named(args.username) is None:  # before the password is typed for nothing
        raise _no_account(args.username)
    password_hash = await hashed(_read_password(args.password_stdin))
    ended = _found(args.username, await store.accounts.replace_password(args.username, password_hash))
    print(f"Changed the password of {args.username}; ended {ended} sessions.")


async def end_sessions(store: Store, args: argparse.Namespace) -> None:
    ended = _found(args.username, await store.accounts.end_sessions(args.username))
    print(f"Ended {ended} sessions of {args.username}.")


HANDLERS: dict[str, Callable[[Store, argparse.Namespace], Awaitable[None]]] = {
    "create": create,
    "list": list_accounts,
    "disable": disable,
    "enable": enable,
    "passwd": passwd,
    "end-sessions": end_sessions,
}


def _found(username: str, ended: int | None) -> int:
    """The sessions a change ended; ValueError when the store found no such account."""
    if ended is None:
        raise _no_account(username)
    return ended


def _no_account(username: str) -> ValueError:
    return ValueError(f"there is no account {username!r}; `imagegen accounts list` shows them")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("the passwords differ")
    return check_password(password, MIN_PASSWORD_LENGTH)

"""`imagegen webhooks secret|list`: the signing secret of a key's or account's webhooks, and what was
delivered; safe while serving.

`secret` makes a new `whsec_` secret, replacing any the key or account had, and prints it once: the
operator hands it to whoever receives the webhooks, who verifies each delivery with it (any Standard
Webhooks library). Deliveries sent from then on are signed with it.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from frontend.admin import format_date, on_store, print_table
from frontend.sealing import Sealer
from frontend.settings import Settings
from frontend.store import Store
from frontend.webhooks import replace_secret

COMMAND = "webhooks"


def add_commands(commands: Any) -> None:
    """Add `webhooks` to `imagegen`'s subparsers."""
    webhooks = commands.add_parser("webhooks", help="webhook signing secrets and deliveries").add_subparsers(
        dest="action", required=True
    )
    secret = webhooks.add_parser(
        "secret", help="make a key's or account's signing secret, replacing any; printed once, alone on the last line"
    )
    secret.add_argument("principal", help="an API key's id, or an account's username or id")
    listed = webhooks.add_parser("list", help="the newest deliveries and their attempts")
    listed.add_argument("--principal", help="an API key's id, or an account's username or id")
    listed.add_argument("--job", help="one job's deliveries")
    listed.add_argument("--limit", type=int, default=50)


def run(args: argparse.Namespace, settings: Settings) -> None:
    if args.action == "secret":
        sealer = Sealer.from_settings(settings)
        asyncio.run(on_store(settings, lambda store: make_secret(store, sealer, args)))
    else:
        asyncio.run(on_store(settings, lambda store: list_deliveries(store, args)))


async def make_secret(store: Store, sealer: Sealer, args: argparse.Namespace) -> None:
    principal = await principal_id(store, args.principal)
    secret = await replace_secret(store, sealer, principal)
    print(f"Webhook secret of {principal}; deliveries are signed with it from now on. Shown once:")
    print(secret)


async def list_deliveries(store: Store, args: argparse.Namespace) -> None:
    principal = None if args.principal is None else await principal_id(store, args.principal)
    rows = [
        [
            delivery.id,
            delivery.job_id,
            delivery.event_type,
            delivery.host,
            delivery.status,
            " ".join(str(attempt.response_status or "-") for attempt in delivery.attempts),
            format_date(delivery.created_at),
            (delivery.attempts[-1].error or "") if delivery.attempts else "",
        ]
        for delivery in await store.webhook_deliveries.listed(principal, args.job, args.limit)
    ]
    print_table(["ID", "JOB", "EVENT", "HOST", "STATUS", "ANSWERS", "CREATED", "LAST ERROR"], rows)


async def principal_id(store: Store, name: str) -> str:
    """The id of the active API key `name`, or of the account named (or with the id) `name`."""
    if any(key.id == name and key.revoked_at is None for key in await store.keys.all()):
        return name
    account = await store.accounts.named(name)
    if account is not None:
        return account.id
    if any(account.id == name for account in await store.accounts.all()):
        return name
    raise ValueError(f"no active API key or account is {name!r}: `imagegen keys list` and `accounts list` show them")

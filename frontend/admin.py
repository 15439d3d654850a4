"""`imagegen keys|plans|usage`: the operator's commands on the store, safe while serving (`accounts`:
account_commands.py)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from frontend.auth.keys import create_key
from frontend.auth.scopes import BENEFITS, SCOPES, parse_names
from frontend.settings import Settings
from frontend.store import Store, connect
from frontend.store.plans import Plan, Price

COMMANDS = ("keys", "plans", "usage")
ALL_SCOPES = ",".join(sorted(SCOPES))


def add_commands(commands: Any) -> None:
    """Add the store's commands to `imagegen`'s subparsers."""
    keys = commands.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key; its secret is printed once, alone on the last line")
    create.add_argument("--scopes", required=True, help=f"comma-separated, of: {ALL_SCOPES}")
    create.add_argument("--plan", required=True)
    create.add_argument("--name", default="")
    keys.add_parser("list")
    keys.add_parser("revoke").add_argument("id")

    plans = commands.add_parser("plans", help="list plans, add plans, set their prices").add_subparsers(
        dest="action", required=True
    )
    plans.add_parser("list")
    plan = plans.add_parser("create", help="add a plan; limits left out are the server's defaults")
    plan.add_argument("name")
    plan.add_argument("--benefits", default="", help=f"comma-separated, of: {', '.join(sorted(BENEFITS))}")
    plan.add_argument("--requests-per-minute", type=int)
    plan.add_argument("--concurrent-generations", type=int)
    plan.add_argument("--batch-discount", type=float, default=0.0, help="fraction off `:batch` jobs' credits (0 to 1)")
    price = plans.add_parser("price", help="credits per image: PER_IMAGE + PER_MEGAPIXEL_STEP * megapixels * steps")
    price.add_argument("name")
    price.add_argument("--model", default="*", help="a pipeline name; * (the default) for every other model")
    price.add_argument("--per-image", type=float, default=0.0)
    price.add_argument("--per-megapixel-step", type=float, default=0.0)

    usage = commands.add_parser("usage", help="the usage ledger, summarised per key or account")
    usage.add_argument("--since", type=datetime.date.fromisoformat, help="YYYY-MM-DD (UTC); default: everything")
    usage.add_argument("--json", action="store_true", help="one JSON object per key or account")


def run(args: argparse.Namespace, settings: Settings) -> None:
    """Run one of COMMANDS on the store the server uses."""
    command = f"{args.command} {args.action}" if args.command != "usage" else "usage"
    asyncio.run(on_store(settings, lambda store: HANDLERS[command](store, args)))


async def on_store(settings: Settings, work: Callable[[Store], Awaitable[None]]) -> None:
    store = await connect(settings.store_location)
    try:
        await work(store)
    finally:
        store.close()


async def keys_create(store: Store, args: argparse.Namespace) -> None:
    key, secret = await create_key(store, parse_names(args.scopes, SCOPES, "scopes"), args.plan, args.name)
    print(f"Created {key.id} (plan {key.plan}, scopes {', '.join(sorted(key.scopes))}). Its secret, shown once:")
    print(secret)


async def keys_list(store: Store, args: argparse.Namespace) -> None:
    rows = [
        [
            key.id,
            key.prefix,
            key.name,
            key.plan,
            ",".join(sorted(key.scopes)),
            format_date(key.created_at),
            format_date(key.revoked_at) if key.revoked_at else "",
        ]
        for key in await store.keys.all()
    ]
    print_table(["ID", "PREFIX", "NAME", "PLAN", "SCOPES", "CREATED", "REVOKED"], rows)


async def keys_revoke(store: Store, args: argparse.Namespace) -> None:
    if not await store.keys.revoke(args.id):
        raise ValueError(f"there is no active key {args.id!r}")
    print(f"Revoked {args.id}.")


async def plans_list(store: Store, args: argparse.Namespace) -> None:
    rows = []
    for plan in await store.plans.all():
        prices = await store.plans.prices(plan.name)
        rows.append(
            [
                plan.name,
                ",".join(sorted(plan.benefits)),
                _limit(plan.requests_per_minute),
                _limit(plan.concurrent_generations),
                f"{plan.batch_discount:g}",
                " ".join(f"{model}={p.per_image:g}+{p.per_megapixel_step:g}/MP-step" for model, p in prices.items()),
            ]
        )
    print_table(["PLAN", "BENEFITS", "REQUESTS/MIN", "CONCURRENT", "BATCH DISCOUNT", "CREDITS PER IMAGE"], rows)


async def plans_create(store: Store, args: argparse.Namespace) -> None:
    benefits = parse_names(args.benefits, BENEFITS, "benefits")
    if not 0.0 <= args.batch_discount <= 1.0:
        raise ValueError("--batch-discount is a fraction from 0 to 1")
    plan = Plan(args.name, benefits, args.requests_per_minute, args.concurrent_generations, args.batch_discount)
    await store.plans.add(plan)
    print(f"Created plan {args.name}.")


async def plans_price(store: Store, args: argparse.Namespace) -> None:
    await store.plans.named(args.name)
    await store.plans.set_price(args.name, args.model, Price(args.per_image, args.per_megapixel_step))
    print(f"Set the price of {args.model} on {args.name}.")


async def usage_report(store: Store, args: argparse.Namespace) -> None:
    since = datetime.datetime.combine(args.since, datetime.time(), datetime.UTC).timestamp() if args.since else 0.0
    summaries = await store.ledger.summary(since)
    if args.json:
        for summary in summaries:
            print(json.dumps(dataclasses.asdict(summary)))
        return
    rows = [
        [s.principal, s.name, s.requests, s.failed, s.images, f"{s.energy_kwh:.9f}", f"{s.credits:g}"]
        for s in summaries
    ]
    print_table(["KEY OR ACCOUNT", "NAME", "REQUESTS", "FAILED", "IMAGES", "ENERGY (kWh)", "CREDITS"], rows)


HANDLERS: dict[str, Callable[[Store, argparse.Namespace], Awaitable[None]]] = {
    "keys create": keys_create,
    "keys list": keys_list,
    "keys revoke": keys_revoke,
    "plans list": plans_list,
    "plans create": plans_create,
    "plans price": plans_price,
    "usage": usage_report,
}


def format_date(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _limit(value: int | None) -> str:
    return "default" if value is None else str(value)


def print_table(headers: list[str], rows: Sequence[Sequence[Any]]) -> None:
    table = [headers, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

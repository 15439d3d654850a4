"""`imagegen jobs list|show|cancel`: the operator's view of the job queue, every key's and account's
jobs, on the store the server uses; safe while serving. Never a job's request or result: they are
sealed for their owner (frontend/jobs.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from frontend.admin import format_date, on_store, print_table
from frontend.settings import Settings
from frontend.store import Store

COMMAND = "jobs"


def add_commands(commands: Any) -> None:
    """Add `jobs` to `imagegen`'s subparsers."""
    jobs = commands.add_parser("jobs", help="list, show and cancel asynchronous jobs").add_subparsers(
        dest="action", required=True
    )
    listed = jobs.add_parser("list", help="the newest jobs, every caller's")
    listed.add_argument("--principal", help="one API key's or account's id")
    listed.add_argument("--limit", type=int, default=50)
    jobs.add_parser("show", help="one job as JSON (without its request or result)").add_argument("id")
    jobs.add_parser("cancel", help="a queued job never runs; a running one stops at its next step").add_argument("id")


def run(args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(on_store(settings, lambda store: HANDLERS[args.action](store, args)))


async def list_jobs(store: Store, args: argparse.Namespace) -> None:
    records = await store.jobs.page(args.principal, None, max(1, min(args.limit, 1000)), time.time())
    rows = [
        [
            r.id,
            r.principal,
            r.model,
            r.status,
            "" if r.queue_position is None else r.queue_position,
            f"{r.step}/{r.steps}",
            r.attempts,
            format_date(r.created_at),
        ]
        for r in records
    ]
    print_table(["ID", "KEY OR ACCOUNT", "MODEL", "STATUS", "POSITION", "STEP", "ATTEMPTS", "CREATED"], rows)


async def show_job(store: Store, args: argparse.Namespace) -> None:
    record = await store.jobs.get(args.id, None, time.time())
    if record is None:
        raise ValueError(f"there is no job {args.id!r}")
    print(json.dumps(asdict(record), indent=2))


async def cancel_job(store: Store, args: argparse.Namespace) -> None:
    """Through the store, as the owner's cancel: the worker that runs the job reads it at its next
    lease renewal (within a second)."""
    if not await store.jobs.cancel(args.id, None, time.time()):
        raise ValueError(f"there is no queued or running job {args.id!r}")
    print(f"Cancelled {args.id}.")


HANDLERS: dict[str, Callable[[Store, argparse.Namespace], Awaitable[None]]] = {
    "list": list_jobs,
    "show": show_job,
    "cancel": cancel_job,
}

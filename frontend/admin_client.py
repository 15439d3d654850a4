"""`imagegen rollout|rollback|status`: the operator's commands that act through a running frontend's
admin API (frontend/api/admin.py), so they work the same against the embedded stack and compose."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

COMMANDS = ("rollout", "rollback", "status")
DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 900.0
"""A rollout answers once drained: up to the server's request timeout (300 s by default) and more."""


def add_commands(commands: Any) -> None:
    rollout = commands.add_parser(
        "rollout", help="serve another exported version of a pipeline: load, warm up, switch, drain, unload"
    )
    rollout.add_argument("model", help="a pipeline name, e.g. flux-schnell")
    rollout.add_argument("--version", type=int, required=True)
    rollout.add_argument("--canary", type=float, metavar="PERCENT", help="send only this share of requests to it")
    rollback = commands.add_parser("rollback", help="end a canary, else return to the previous version")
    rollback.add_argument("model")
    commands.add_parser("status", help="what each running frontend serves, and each Triton server holds")
    for parser in (rollout, rollback, commands.choices["status"]):
        parser.add_argument("--url", default=DEFAULT_URL, help=f"a frontend's address (default {DEFAULT_URL})")
        parser.add_argument("--key", help="a key with the admin.models scope (default: $IMAGEGEN_API_KEY)")


def run(args: argparse.Namespace) -> None:
    if args.command == "rollout":
        body = {"version": args.version, "canary_percent": args.canary}
        print_switch(call(args, "POST", f"/v1/admin/models/{args.model}/rollout", body))
    elif args.command == "rollback":
        print_switch(call(args, "POST", f"/v1/admin/models/{args.model}/rollback", {}))
    else:
        print_status(call(args, "GET", "/v1/admin/status", None))


def call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """One admin request; ValueError carrying the API's error message when it is refused."""
    key = args.key or os.environ.get("IMAGEGEN_API_KEY")
    if not key:
        raise ValueError("give --key or set IMAGEGEN_API_KEY: a key with the admin.models scope")
    request = urllib.request.Request(
        args.url.rstrip("/").removesuffix("/v1") + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            answer: dict[str, Any] = json.load(response)
            return answer
    except urllib.error.HTTPError as exc:
        error = json.loads(exc.read() or b"{}").get("error", {})
        raise ValueError(f"{exc.code} {error.get('code')}: {error.get('message')}") from None
    except urllib.error.URLError as exc:
        raise ValueError(f"cannot reach {args.url}: {exc.reason}") from None


def print_switch(answer: dict[str, Any]) -> None:
    route = answer["route"]
    canary = f", canary v{route['canary_version']} at {route['canary_percent']:g}%" if route["canary_version"] else ""
    drained = "drained" if answer["drained"] else "NOT drained (a frontend kept requests past the timeout)"
    print(
        f"{route['model']}: serving v{route['stable_version']}{canary} "
        f"(generation {route['generation']}, {drained}, {answer['seconds']:.1f} s)"
    )


def print_status(answer: dict[str, Any]) -> None:
    rows = [("FRONTEND", "MODEL", "STABLE", "CANARY", "GENERATION", "IN FLIGHT")]
    for frontend in answer["frontends"]:
        for model, route in frontend["serving"].items():
            canary = f"v{route['canary_version']} {route['canary_percent']:g}%" if route["canary_version"] else "-"
            in_flight = [
                f"v{key.removeprefix(model + '@')}: {n}"
                for key, n in sorted(frontend["in_flight"].items())
                if key.startswith(f"{model}@")
            ]
            rows.append(
                (
                    frontend["address"],
                    model,
                    f"v{route['stable_version']}",
                    canary,
                    str(route["generation"]),
                    ", ".join(in_flight) or "0",
                )
            )
    print_rows(rows)
    servers = [("TRITON SERVER", "STATE", "IN FLIGHT", "MODEL", "VERSIONS")]
    for server in answer.get("triton_servers", []):
        for model, versions in server["models"].items() or [("-", [])]:
            ready = ", ".join(f"v{version}" for version in versions) or "-"
            servers.append((server["server"], server["state"], str(server["in_flight"]), model, ready))
    print()
    print_rows(servers)


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

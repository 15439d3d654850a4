"""`imagegen lora add|list|remove`: the operator's LoRA adapters, safe while serving.

The server reads the registry per request, so an adapter added or removed here is used, or refused,
by the next request without a restart; a request in flight keeps the factors it already loaded.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from frontend.adapters import pipeline_metadata, register
from frontend.admin import format_date, on_store, print_table
from frontend.settings import Settings
from frontend.store import Store

COMMAND = "lora"


def add_commands(commands: Any) -> None:
    """Add `lora` to `imagegen`'s subparsers."""
    lora = commands.add_parser("lora", help="register, list and remove LoRA adapters").add_subparsers(
        dest="action", required=True
    )
    add = lora.add_parser("add", help="register a diffusers/PEFT LoRA .safetensors file for a model")
    add.add_argument("name", help="what requests name in `lora_weights`")
    add.add_argument("--file", type=Path, required=True)
    add.add_argument("--model", required=True, help="the pipeline it adapts, e.g. flux-dev")
    add.add_argument(
        "--model-repository",
        type=Path,
        help="where the model's exported denoiser config lies (default: IMAGEGEN_MODEL_REPOSITORY)",
    )
    lora.add_parser("list")
    lora.add_parser("remove").add_argument("name")


def run(args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(on_store(settings, lambda store: _run(store, args, settings)))


async def _run(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    if args.action == "add":
        metadata = pipeline_metadata(args.model_repository or settings.model_repository, args.model)
        adapter = await register(store, settings.lora_folder, args.name, args.model, args.file, metadata)
        print(f"Added {adapter.name} for {adapter.model} (rank {adapter.rank}, {adapter.layers} layers).")
    elif args.action == "list":
        rows = [
            [a.name, a.model, a.rank, a.layers, a.sha256[:12], format_date(a.created_at)]
            for a in await store.adapters.find()
        ]
        print_table(["NAME", "MODEL", "RANK", "LAYERS", "SHA256", "ADDED"], rows)
    else:
        removed = next(iter(await store.adapters.find([args.name])), None)
        if removed is None or not await store.adapters.remove(args.name):
            raise ValueError(f"there is no LoRA adapter {args.name!r}")
        if not any(other.sha256 == removed.sha256 for other in await store.adapters.find()):
            (settings.lora_folder / f"{removed.sha256}.safetensors").unlink(missing_ok=True)
        print(f"Removed {args.name}.")

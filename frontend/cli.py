"""The `imagegen` command: build tiny checkpoints, export them to Triton, serve the API, manage keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from frontend import account_commands, adapter_commands, admin, admin_client, job_commands, webhook_commands
from frontend.auth.keys import check_operator_secret, ensure_operator_key, find_key, new_secret
from frontend.auth.local_secrets import kept_secret, owner_only_folder
from frontend.logs import configure_logging, quiet_libraries
from frontend.settings import Settings
from frontend.store import Store, connect

log = logging.getLogger("imagegen")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""mallopt(3)'s parameters."""
HEAP_ALLOCATIONS_UP_TO = 32 * 1024 * 1024
"""glibc's largest mmap threshold on 64 bits."""
FREED_MEMORY_KEPT = 512 * 1024 * 1024
"""Free memory at the heap's top that glibc keeps rather than returns: a few requests' tensors."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagegen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("tiny", help="write a tiny, randomly initialised checkpoint in diffusers format")
    tiny.add_argument("--family", default="flux-schnell")
    tiny.add_argument("--out", type=Path, required=True)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--preset",
        default="tiny",
        help="tiny; bench: a larger denoiser for `make bench`; real-width: the published widths, depth cut (GBs)",
    )

    export = commands.add_parser("export", help="export a diffusers checkpoint folder into a Triton model repository")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        help="a diffusers folder, a Hugging Face Hub id (ORG/NAME[@REVISION]), or a single SDXL or FLUX.1 .safetensors",
    )
    source.add_argument(
        "--simulate",
        type=Path,
        metavar="COSTS.json",
        help="no weights: --family's published configs, served by a GPU simulated from this cost file "
        "(benchmarks/h200_costs.json)",
    )
    export.add_argument("--family", choices=("flux-schnell", "flux-dev", "sdxl"), help="with --simulate")
    export.add_argument(
        "--timing", choices=("graph", "eager"), default="graph", help="with --simulate: the cost file's figures"
    )
    export.add_argument(
        "--config",
        help="for a single .safetensors: the diffusers folder or Hub id of its base model (configs, tokenizers, "
        "scheduler, and the components the file lacks)",
    )
    export.add_argument("--name", required=True, help="public pipeline name, e.g. flux-schnell")
    export.add_argument("--repository", type=Path, required=True)
    export.add_argument("--version", type=int, default=1)
    export.add_argument(
        "--lora-rank",
        type=int,
        help="the denoiser's LoRA rank budget per request (0: no LoRA branches; default: export.lora.DEFAULT_RANK)",
    )
    export.add_argument(
        "--engine",
        choices=("onnx", "tensorrt"),
        default="onnx",
        help="tensorrt: also build TensorRT plans (NVIDIA's TensorRT image, on the serving GPU's architecture)",
    )
    export.add_argument(
        "--precision", choices=("bf16", "fp16", "fp32"), default="bf16", help="TensorRT plans' precision (README)"
    )
    export.add_argument(
        "--dtype",
        choices=("fp32", "fp16", "bf16"),
        default="fp32",
        help="the ONNX weights' precision, FP32 at the graph boundary; fp16 keeps overflowing components FP32 (README)",
    )

    safety = commands.add_parser("safety-model", help="write the image-safety classifier into a model repository")
    safety.add_argument("--repository", type=Path, required=True)
    safety.add_argument("--seed", type=int, default=0)
    safety.add_argument("--version", type=int, default=1)

    admin.add_commands(commands)
    account_commands.add_commands(commands)
    admin_client.add_commands(commands)
    adapter_commands.add_commands(commands)
    webhook_commands.add_commands(commands)
    job_commands.add_commands(commands)

    tiny_lora = commands.add_parser("tiny-lora", help="write a random LoRA adapter for a tiny checkpoint (PEFT)")
    tiny_lora.add_argument("--checkpoint", type=Path, required=True)
    tiny_lora.add_argument("--out", type=Path, required=True, help="a folder; the adapter is its .safetensors file")
    tiny_lora.add_argument("--seed", type=int, default=0)
    tiny_lora.add_argument("--rank", type=int, default=4)

    bench = commands.add_parser("bench", help="measure a running server: throughput and latency per concurrency")
    bench.add_argument("--url", default="http://127.0.0.1:8000/v1", help="the API's base URL")
    bench.add_argument("--key", required=True, help="an API key with inference.images on a studio plan")
    bench.add_argument("--model", default="flux-schnell")
    bench.add_argument("--width", type=int, default=1024)
    bench.add_argument("--height", type=int, default=1024)
    bench.add_argument("--steps", type=int, help="the model's default when left out")
    bench.add_argument("--n", type=int, default=1, help="images per request")
    bench.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    bench.add_argument("--concurrency", default="1,2,4,8", help="comma-separated concurrency levels")
    bench.add_argument("--json", type=Path, help="also write the results here")

    serve = commands.add_parser("serve", help="serve the API (starting an embedded Triton unless --triton-url)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--model-repository", type=Path)
    serve.add_argument(
        "--triton-url",
        help="running Tritons' HTTP endpoints, one pool: host:port,host:port or dns://NAME:PORT (every address)",
    )
    serve.add_argument(
        "--forwarded-allow-ips", help="the proxies (addresses or networks) whose X-Forwarded-* headers are believed"
    )

    args = parser.parse_args(argv)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    try:
        configure_logging(Settings.from_env().log_format)
        if args.command != "serve":  # the server's log keeps uvicorn's and Triton's lines
            quiet_libraries()
        if args.command == "tiny":
            from export.tiny import build_tiny_checkpoint

            build_tiny_checkpoint(args.family, args.out, args.seed, args.preset)
        elif args.command == "export" and args.simulate:
            from export.simulate import export_simulated

            if args.family is None:
                raise ValueError("--simulate needs --family")
            rank = {} if args.lora_rank is None else {"lora_rank": args.lora_rank}
            export_simulated(args.simulate, args.family, args.name, args.repository, args.version, args.timing, **rank)
        elif args.command == "export":
            from export.checkpoint import export_checkpoint

            rank = {} if args.lora_rank is None else {"lora_rank": args.lora_rank}
            from export.report import summary_table

            reports = export_checkpoint(
                args.checkpoint,
                args.name,
                args.repository,
                args.version,
                engine=args.engine,
                precision=args.precision,
                dtype=args.dtype,
                config=args.config,
                **rank,
            )
            print(summary_table(reports))
        elif args.command == "tiny-lora":
            from export.lora import build_tiny_lora

            print(build_tiny_lora(args.checkpoint, args.out, args.seed, args.rank))
        elif args.command == "safety-model":
            from export.safety import export_safety_model

            export_safety_model(args.repository, args.seed, args.version)
        elif args.command == "bench":
            from frontend.bench import BenchConfig
            from frontend.bench import bench as run_bench  # `bench` is this command's parser here

            levels = tuple(int(level) for level in args.concurrency.split(","))
            config = BenchConfig(
                args.url, args.key, args.model, args.width, args.height, args.steps, args.n, args.requests, levels
            )
            run_bench(config, args.json)
        elif args.command in admin_client.COMMANDS:
            admin_client.run(args)
        elif args.command in admin.COMMANDS:
            admin.run(args, Settings.from_env())
        elif args.command == account_commands.COMMAND:
            account_commands.run(args, Settings.from_env())
        elif args.command == adapter_commands.COMMAND:
            adapter_commands.run(args, Settings.from_env())
        elif args.command == webhook_commands.COMMAND:
            webhook_commands.run(args, Settings.from_env())
        elif args.command == job_commands.COMMAND:
            job_commands.run(args, Settings.from_env())
        else:
            serve_command(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    return 0


def keep_freed_memory() -> None:
    """Every request allocates and frees tensors of megabytes (FLUX.1's 4 MB T5 states, their copies,
    a 3 MB image): glibc maps each one afresh and unmaps it when freed, so its pages fault in again
    every time (a FLUX.1 request's prompt stage took 32 ms instead of 14 on this project's machine).
    From the heap, and the heap kept when they are freed, the next request reuses the pages."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its allocator is its own
        return
    libc.mallopt(M_MMAP_THRESHOLD, HEAP_ALLOCATIONS_UP_TO)
    libc.mallopt(M_TRIM_THRESHOLD, FREED_MEMORY_KEPT)


def serve_command(args: argparse.Namespace) -> None:
    import uvicorn

    from frontend.app import create_app
    from frontend.embedded_triton import EmbeddedTriton, trace_args
    from frontend.triton_pool import PoolAddress

    keep_freed_memory()
    settings = Settings.from_env()
    overrides = {
        "host": args.host,
        "port": args.port,
        "model_repository": args.model_repository,
        "triton_url": args.triton_url,
        "forwarded_allow_ips": args.forwarded_allow_ips,
    }
    settings = replace(settings, **{key: value for key, value in overrides.items() if value is not None})
    if settings.triton_url is not None:
        PoolAddress.parse(settings.triton_url)  # a malformed list is refused before anything starts
    owner_only_folder(settings.state_dir)
    key_file = settings.state_dir / "api_key"
    generated = settings.api_key is None and not key_file.is_file()
    api_key = check_operator_secret(settings.api_key) if settings.api_key else kept_secret(key_file, new_secret)
    store = asyncio.run(open_store(settings, api_key))
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; with the default
    # handler that would end the process before the `finally` below could stop Triton.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        triton_url = settings.triton_url
        if triton_url is None:
            triton = EmbeddedTriton(
                settings.model_repository,
                settings.state_dir,
                http_port=settings.triton_http_port,
                metrics_port=settings.triton_metrics_port,
                extra_args=trace_args(settings.triton_trace_file, settings.triton_trace_rate)
                if settings.triton_trace_file
                else (),
            )
            triton_url = stack.enter_context(triton).url
            # The embedded Triton maps this host's /dev/shm: constant inputs go through it unless turned off.
            shared_memory = settings.triton_shared_memory is not False
            settings = replace(settings, triton_secret=triton.secret, triton_shared_memory=shared_memory)
        app = create_app(settings, store, triton_url)
        # Printed once, when generated: an operator's own key (IMAGEGEN_API_KEY) is theirs already, and
        # one generated before stays in its file, out of logs that other people may read.
        if settings.api_key:
            shown = "from IMAGEGEN_API_KEY"
        else:
            shown = f"{api_key} (shown once, kept in {key_file})" if generated else f"in {key_file}"
        print(f"Serving http://{settings.host}:{settings.port}/v1  API key: {shown}", file=sys.stderr, flush=True)
        # On SIGTERM uvicorn stops accepting, lets in-flight requests finish for up to the grace
        # period, then returns; the exit stack stops Triton after that.
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level="info",
            access_log=False,  # RequestIds writes the access line, with the request id
            log_config=None,  # its loggers go through configure_logging's handler
            # The scheme (so a session cookie is Secure behind a TLS gateway) and the client address
            # come from X-Forwarded-* only when these proxies send them.
            forwarded_allow_ips=settings.forwarded_allow_ips,
            timeout_graceful_shutdown=settings.shutdown_grace,
        )


async def open_store(settings: Settings, operator_key: str) -> Store:
    """The store, migrated, holding the operator's key (every scope, the studio plan)."""
    store = await connect(settings.store_location)
    if revoked := await ensure_operator_key(store, operator_key):
        log.warning("a new operator API key: the earlier one is revoked (%s)", ", ".join(revoked))
    if await find_key(store, operator_key) is None:
        log.warning("the operator's API key has been revoked: `imagegen keys create` makes another")
    return store


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)

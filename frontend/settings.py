"""The one settings object: environment variables, overridden by `imagegen serve` flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PROMPT_POLICY = Path(__file__).with_name("prompt_policy.txt")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    model_repository: Path = Path("model_repository")
    state_dir: Path = Path(".imagegen")
    """Runtime state: the store, the generated API key and session secret, the embedded Triton's backend
    folder and log."""
    triton_url: str | None = None
    """External Triton servers' HTTP endpoints, one pool: a comma-separated list of `host:port`, and
    `dns://name:port` for every address a name resolves to, re-resolved each second (a Kubernetes
    headless Service; frontend/triton_pool.py); None starts the embedded one."""
    triton_secret: str | None = None
    """What an external Triton's restricted APIs (model load and unload...) require in the
    `imagegen-triton-secret` header (docker-compose.yml); the embedded Triton makes its own per start."""
    triton_shared_memory: bool | None = None
    """Send each request's constant denoiser inputs to Triton once, through system shared memory
    (frontend/shared_memory.py): only for a Triton on this host that shares its /dev/shm. None: on
    for the embedded Triton, off for an external one (`IMAGEGEN_TRITON_SHARED_MEMORY=on|off`)."""
    triton_http_port: int = 8001
    triton_metrics_port: int = 8002
    """Ports of the embedded Triton; 0 picks free ones."""
    triton_trace_file: Path | None = None
    """The embedded Triton writes a trace of every sampled inference request (with its request id) to
    `<file>.0`, `<file>.1`, ...; None: no tracing."""
    triton_trace_rate: int = 1
    """Trace one inference request in this many."""
    metrics_port: int | None = None
    """`/metrics` on a port of its own (on `host`); None: on the API's port."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Comma-separated addresses (or networks) of the proxies whose `X-Forwarded-Proto` and
    `X-Forwarded-For` are believed: the compose gateway's address. uvicorn's default: a proxy on this host."""
    log_format: str = "text"
    """`json` (one object per line, for log collectors) or `text`."""
    api_key: str | None = None
    default_model: str = "dall-e-3"
    aliases: dict[str, str] = field(default_factory=lambda: {"dall-e-3": "flux-schnell"})
    catalog: Path | None = None
    """The operator's catalog file (TOML: public ids, aliases, flavours; frontend/catalog.py), re-read
    when it changes; None: every pipeline under its own name and the aliases above."""
    device_watts: float = 65.0
    """Power drawn while Triton computes, for energy_cost (this default: a desktop CPU package)."""
    store: str | None = None
    """Where keys, accounts, sessions, rate-limit counts and the usage ledger live: a SQLite file's
    path, or a `postgresql://` URL for replicas sharing one database; None: `<state_dir>/imagegen.db`."""
    session_secret: str | None = None
    """Signs session cookies; None: made once into `<state_dir>/session_secret`. Replicas share one."""
    secrets_key: str | None = None
    """Seals what the store keeps but must not reveal (frontend/sealing.py: job results and prompts,
    webhook secrets): 32 bytes in base64. None: made once into `<state_dir>/secrets.key` (SQLite
    only: replicas sharing PostgreSQL must share one)."""
    webhook_allowed_hosts: tuple[str, ...] = ()
    """Host names (or addresses) a job's `webhook_url` may name: the server calls them on a user's
    behalf (frontend/webhooks.py). Empty: webhooks are refused."""
    webhook_attempts: int = 8
    """Attempts at one webhook delivery before it is recorded failed, the first included."""
    webhook_retry_seconds: float = 30.0
    """Delay before a webhook's first retry; each further one doubles it (8 attempts: about an hour)."""
    webhook_timeout: float = 10.0
    """Seconds one webhook attempt may take, from connecting to the receiver's answer."""
    session_ttl_seconds: int = 24 * 3600
    requests_per_minute: int = 60
    concurrent_generations: int = 4
    """Per key or account, for plans that set no limits of their own."""
    sign_ins_per_minute: int = 10
    """Sign-in attempts per username from one client address in any 60 s, right or wrong, before a 429:
    bounds password guessing (from all addresses together: 10 times this, frontend/rate_limits.py)."""
    sign_ins_per_address: int = 30
    """Sign-in attempts from one client address in any 60 s, whatever the usernames: bounds the
    password hashing one address can cause, and guessing spread over usernames."""
    safety_threshold: float = 0.5
    """Images whose `unsafe_score` from the image-safety model reaches this are refused."""
    prompt_policy: Path = DEFAULT_PROMPT_POLICY
    """Regular expressions refused in prompts; the default is documented in the file itself."""
    moderation_low: bool = True
    """Whether requests may send OpenAI's `moderation=low`, which weakens no check here (README, Request):
    off, it is refused with a 400, for operators who would rather clients were told."""
    running_per_model: int = 4
    queued_per_model: int = 16
    """Admission per model: generations running at once, and waiting behind them before a 429."""
    running_per_key: int = 2
    """Of a model's running generations, how many one key or account may hold: its further requests
    wait in the queue while other keys' pass them, so a few keys cannot hold a model."""
    request_timeout: float = 300.0
    """Seconds a generation may take, queueing included, before a 504 frees its slot."""
    triton_timeout: float = 60.0
    """Seconds one Triton call may take before the request fails with a 503 (a stalled server)."""
    max_body_bytes: int = 32 * 1024 * 1024
    max_pixels_per_request: int = 16 * 1024 * 1024
    """n x width x height of one request, and its input images' pixels together."""
    max_work_per_request: int = 40 * 16 * 1024 * 1024
    """n x width x height x steps x passes (2 with classifier-free guidance) of one request: how long
    it holds a slot. The default: the pixel budget at 40 steps."""
    shutdown_grace: int = 30
    """On SIGTERM, seconds in-flight requests may still run before the server stops anyway."""
    job_result_ttl: float = 3600.0
    """Seconds a finished job's result is kept for its owner to fetch; then deleted (status `expired`)."""
    job_workers: int = 2
    """Jobs this frontend runs at once (each still waits for a free running slot of its model)."""
    job_lease: float = 30.0
    """Seconds a worker's claim on a job lasts unless renewed (it renews every third of it, at most
    every second): a frontend that dies leaves its job to another worker this long after."""
    job_attempts: int = 3
    """Times a job is started (a worker died holding it) before it fails."""
    jobs_per_key: int = 100
    """Jobs one key or account may have queued or running; one more is refused with a 429."""

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            host=env.get("IMAGEGEN_HOST", cls.host),
            port=int(env.get("PORT", cls.port)),
            model_repository=Path(env.get("IMAGEGEN_MODEL_REPOSITORY", cls.model_repository)),
            state_dir=Path(env.get("IMAGEGEN_HOME", cls.state_dir)),
            triton_url=env.get("IMAGEGEN_TRITON_URL") or None,
            triton_secret=env.get("IMAGEGEN_TRITON_SECRET") or None,
            triton_shared_memory=_switch(env.get("IMAGEGEN_TRITON_SHARED_MEMORY", ""), "IMAGEGEN_TRITON_SHARED_MEMORY"),
            triton_http_port=int(env.get("IMAGEGEN_TRITON_HTTP_PORT", cls.triton_http_port)),
            triton_metrics_port=int(env.get("IMAGEGEN_TRITON_METRICS_PORT", cls.triton_metrics_port)),
            triton_trace_file=Path(env["IMAGEGEN_TRITON_TRACE_FILE"])
            if env.get("IMAGEGEN_TRITON_TRACE_FILE")
            else None,
            triton_trace_rate=int(env.get("IMAGEGEN_TRITON_TRACE_RATE", cls.triton_trace_rate)),
            metrics_port=int(env["IMAGEGEN_METRICS_PORT"]) if env.get("IMAGEGEN_METRICS_PORT") else None,
            forwarded_allow_ips=env.get("IMAGEGEN_FORWARDED_ALLOW_IPS", cls.forwarded_allow_ips),
            log_format=env.get("IMAGEGEN_LOG_FORMAT", cls.log_format),
            api_key=env.get("IMAGEGEN_API_KEY") or None,
            catalog=Path(env["IMAGEGEN_CATALOG"]) if env.get("IMAGEGEN_CATALOG") else None,
            device_watts=float(env.get("IMAGEGEN_DEVICE_WATTS", cls.device_watts)),
            store=env.get("IMAGEGEN_STORE") or None,
            session_secret=env.get("IMAGEGEN_SESSION_SECRET") or None,
            secrets_key=env.get("IMAGEGEN_SECRETS_KEY") or None,
            webhook_allowed_hosts=_names(env.get("IMAGEGEN_WEBHOOK_ALLOWED_HOSTS", "")),
            webhook_attempts=int(env.get("IMAGEGEN_WEBHOOK_ATTEMPTS", cls.webhook_attempts)),
            webhook_retry_seconds=float(env.get("IMAGEGEN_WEBHOOK_RETRY_SECONDS", cls.webhook_retry_seconds)),
            webhook_timeout=float(env.get("IMAGEGEN_WEBHOOK_TIMEOUT", cls.webhook_timeout)),
            session_ttl_seconds=int(env.get("IMAGEGEN_SESSION_TTL", cls.session_ttl_seconds)),
            requests_per_minute=int(env.get("IMAGEGEN_REQUESTS_PER_MINUTE", cls.requests_per_minute)),
            concurrent_generations=int(env.get("IMAGEGEN_CONCURRENT_GENERATIONS", cls.concurrent_generations)),
            sign_ins_per_minute=int(env.get("IMAGEGEN_SIGN_INS_PER_MINUTE", cls.sign_ins_per_minute)),
            sign_ins_per_address=int(env.get("IMAGEGEN_SIGN_INS_PER_ADDRESS", cls.sign_ins_per_address)),
            safety_threshold=float(env.get("IMAGEGEN_SAFETY_THRESHOLD", cls.safety_threshold)),
            prompt_policy=Path(env.get("IMAGEGEN_PROMPT_POLICY", cls.prompt_policy)),
            moderation_low=_switch(env.get("IMAGEGEN_MODERATION_LOW", ""), "IMAGEGEN_MODERATION_LOW") is not False,
            running_per_model=int(env.get("IMAGEGEN_RUNNING_PER_MODEL", cls.running_per_model)),
            queued_per_model=int(env.get("IMAGEGEN_QUEUED_PER_MODEL", cls.queued_per_model)),
            running_per_key=int(env.get("IMAGEGEN_RUNNING_PER_KEY", cls.running_per_key)),
            request_timeout=float(env.get("IMAGEGEN_REQUEST_TIMEOUT", cls.request_timeout)),
            triton_timeout=float(env.get("IMAGEGEN_TRITON_TIMEOUT", cls.triton_timeout)),
            max_body_bytes=int(env.get("IMAGEGEN_MAX_BODY_BYTES", cls.max_body_bytes)),
            max_pixels_per_request=int(env.get("IMAGEGEN_MAX_PIXELS_PER_REQUEST", cls.max_pixels_per_request)),
            max_work_per_request=int(env.get("IMAGEGEN_MAX_WORK_PER_REQUEST", cls.max_work_per_request)),
            shutdown_grace=int(env.get("IMAGEGEN_SHUTDOWN_GRACE", cls.shutdown_grace)),
            job_result_ttl=float(env.get("IMAGEGEN_JOB_RESULT_TTL", cls.job_result_ttl)),
            job_workers=int(env.get("IMAGEGEN_JOB_WORKERS", cls.job_workers)),
            job_lease=float(env.get("IMAGEGEN_JOB_LEASE", cls.job_lease)),
            job_attempts=int(env.get("IMAGEGEN_JOB_ATTEMPTS", cls.job_attempts)),
            jobs_per_key=int(env.get("IMAGEGEN_JOBS_PER_KEY", cls.jobs_per_key)),
        )

    @property
    def store_location(self) -> str:
        return self.store or str(self.state_dir / "imagegen.db")

    @property
    def lora_folder(self) -> Path:
        """Registered LoRA adapter files, named by content hash (`imagegen lora add`)."""
        return self.state_dir / "lora"


def _switch(value: str, name: str) -> bool | None:
    """`on` or `off` (None: unset)."""
    if value not in ("", "on", "off"):
        raise ValueError(f"{name} is `on` or `off`, not {value!r}")
    return None if not value else value == "on"


def _names(value: str) -> tuple[str, ...]:
    """A comma-separated list, lower-cased (host names compare without case), blanks dropped."""
    return tuple(name.strip().lower() for name in value.split(",") if name.strip())

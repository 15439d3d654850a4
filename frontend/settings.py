"""The one settings object: environment variables, overridden by `imagegen serve` flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    model_repository: Path = Path("model_repository")
    state_dir: Path = Path(".imagegen")
    """Runtime state: the generated API key, the embedded Triton's backend folder and log."""
    triton_url: str | None = None
    """host:port of an external Triton's HTTP endpoint; None starts the embedded one."""
    triton_http_port: int = 8001
    triton_metrics_port: int = 8002
    """Ports of the embedded Triton; 0 picks free ones."""
    api_key: str | None = None
    default_model: str = "dall-e-3"
    aliases: dict[str, str] = field(default_factory=lambda: {"dall-e-3": "flux-schnell"})
    device_watts: float = 65.0
    """Power drawn while Triton computes, for energy_cost (this default: a desktop CPU package)."""

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            host=env.get("IMAGEGEN_HOST", cls.host),
            port=int(env.get("PORT", cls.port)),
            model_repository=Path(env.get("IMAGEGEN_MODEL_REPOSITORY", cls.model_repository)),
            state_dir=Path(env.get("IMAGEGEN_HOME", cls.state_dir)),
            triton_url=env.get("IMAGEGEN_TRITON_URL") or None,
            triton_http_port=int(env.get("IMAGEGEN_TRITON_HTTP_PORT", cls.triton_http_port)),
            triton_metrics_port=int(env.get("IMAGEGEN_TRITON_METRICS_PORT", cls.triton_metrics_port)),
            api_key=env.get("IMAGEGEN_API_KEY") or None,
            device_watts=float(env.get("IMAGEGEN_DEVICE_WATTS", cls.device_watts)),
        )

"""API key authentication: `Authorization: Bearer <key>` or `x-api-key: <key>`."""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path

from starlette.requests import Request

from frontend.api.errors import Unauthenticated

log = logging.getLogger(__name__)


def presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def authenticate(request: Request, api_key: str) -> None:
    key = presented_key(request)
    if key is None:
        raise Unauthenticated("No API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`.")
    if not hmac.compare_digest(key.encode(), api_key.encode()):
        raise Unauthenticated("The API key is not valid.")


def load_or_create_key(state_dir: Path) -> str:
    """The key kept in `<state_dir>/api_key`, made once at random so a first run is never open."""
    path = state_dir / "api_key"
    if path.is_file():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    key = f"sk-imagegen-{secrets.token_urlsafe(24)}"
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key

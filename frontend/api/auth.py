"""`POST /v1/auth/login` and `POST /v1/auth/logout`: browser sessions, for pages such as the Studio.

Login answers the CSRF token that later cookie-authenticated POSTs must send in `X-CSRF-Token`.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from frontend.api.errors import InvalidParameter, MalformedBody, Unauthenticated
from frontend.auth.credentials import Authenticator
from frontend.auth.passwords import verify_password


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


def parse_login(body: bytes) -> LoginRequest:
    try:
        return LoginRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] in ("json_invalid", "model_type"):
            raise MalformedBody("The request body must be a JSON object.") from None
        param = ".".join(str(part) for part in first["loc"])
        raise InvalidParameter(f"Invalid `{param}`: {first['msg']}.", param=param) from None


async def login(request: Request) -> JSONResponse:
    auth: Authenticator = request.app.state.auth
    credentials = parse_login(await request.body())
    settings = request.app.state.settings
    await request.app.state.rate_limits.count_sign_in(credentials.username, settings.sign_ins_per_minute)
    account = await auth.store.account_named(credentials.username)
    # scrypt takes tens of milliseconds of CPU: off the event loop, and run even for unknown users.
    matches = await asyncio.to_thread(verify_password, credentials.password, account.password_hash if account else None)
    if account is None or not matches:
        raise Unauthenticated("Wrong username or password.")
    session = await auth.sessions.start(account)
    body = {
        "username": account.username,
        "plan": account.plan,
        "scopes": sorted(account.scopes),
        "expires_at": session.expires_at,
        "csrf_token": auth.sessions.csrf_token(session),
    }
    response = JSONResponse(body)
    auth.sessions.set_cookies(response, session, secure=request.url.scheme == "https")
    return response


async def logout(request: Request) -> Response:
    auth: Authenticator = request.app.state.auth
    session = await auth.session(request)
    await auth.sessions.end(session)
    response = Response(status_code=204)
    auth.sessions.clear_cookies(response)
    return response

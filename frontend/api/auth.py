"""`POST /v1/auth/login` and `POST /v1/auth/logout`: browser sessions, for pages such as the Studio.

Login answers the CSRF token that later cookie-authenticated POSTs must send in `X-CSRF-Token`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from frontend.auth.accounts import (
    MAX_PASSWORD_LENGTH,
    MAX_USERNAME_LENGTH,
    check_password,
    check_username,
    sign_in,
)
from frontend.errors import InvalidParameter, MalformedBody, Unauthenticated
from frontend.services import Services


class LoginRequest(BaseModel):
    """An account's username (1 to 64 printable characters) and password (at most 1,024 characters):
    others are refused before anything is counted, stored or hashed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    username: Annotated[str, Field(min_length=1, max_length=MAX_USERNAME_LENGTH), AfterValidator(check_username)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH), AfterValidator(check_password)]


def parse_login(body: bytes) -> LoginRequest:
    try:
        return LoginRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] in ("json_invalid", "model_type"):
            raise MalformedBody("The request body must be a JSON object.") from None
        param = ".".join(str(part) for part in first["loc"])
        reason = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        raise InvalidParameter(f"Invalid `{param}`: {reason}.", param=param) from None


async def login(request: Request) -> JSONResponse:
    services = Services.of(request)
    auth, settings = services.auth, services.settings
    credentials = parse_login(await request.body())
    address = request.client.host if request.client else "unknown"
    await services.rate_limits.count_sign_in(
        credentials.username, address, settings.sign_ins_per_minute, settings.sign_ins_per_address
    )
    account = await sign_in(auth.store, credentials.username, credentials.password)
    if account is None:
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
    auth = Services.of(request).auth
    session = await auth.session(request)
    await auth.sessions.end(session)
    response = Response(status_code=204)
    auth.sessions.clear_cookies(response)
    return response

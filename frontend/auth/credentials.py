"""Who is calling, checked in the order the API documents: credentials (401), scope (403
`AUTH_1015`), then the plan's benefit (403 `VALIDATION_4003`)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from frontend.auth.keys import find_key
from frontend.auth.sessions import SESSION_COOKIE, Session, Sessions
from frontend.errors import PlanLacksBenefit, ScopeMissing, Unauthenticated
from frontend.store import Store
from frontend.store.plans import Plan

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods a cookie may authenticate without a CSRF token: they change nothing."""


@dataclass(frozen=True)
class Principal:
    """The key or account a request acts for."""

    id: str  # the key's or account's id, the ledger's `principal`
    scopes: frozenset[str]
    plan: Plan


def presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


class Authenticator:
    def __init__(self, store: Store, sessions: Sessions) -> None:
        self.store = store
        self.sessions = sessions

    async def authorize(self, request: Request, scope: str, benefit: str | None = None) -> Principal:
        principal = await self.authenticate(request)
        if scope not in principal.scopes:
            raise ScopeMissing(f"These credentials lack the `{scope}` scope.")
        if benefit is not None and benefit not in principal.plan.benefits:
            raise PlanLacksBenefit(f"The plan `{principal.plan.name}` does not include `{benefit}`.")
        return principal

    async def authenticate(self, request: Request) -> Principal:
        """An API key when the request presents one (a wrong key is refused, not passed over to
        the cookie); else the browser session."""
        secret = presented_key(request)
        if secret is not None:
            key = await find_key(self.store, secret)
            if key is None:
                raise Unauthenticated("The API key is not valid, or has been revoked.")
            return Principal(key.id, key.scopes, await self.store.plans.named(key.plan))
        account = (await self.session(request)).account
        return Principal(account.id, account.scopes, await self.store.plans.named(account.plan))

    async def principal(self, principal_id: str) -> Principal | None:
        """The key or account `principal_id` as it stands now, for work done after its request (a
        job): None once the key is revoked or the account disabled."""
        key = await self.store.keys.active_by_id(principal_id)
        if key is not None:
            return Principal(key.id, key.scopes, await self.store.plans.named(key.plan))
        account = await self.store.accounts.by_id(principal_id)
        if account is None or account.disabled_at is not None:
            return None
        return Principal(account.id, account.scopes, await self.store.plans.named(account.plan))

    async def session(self, request: Request) -> Session:
        """The request's browser session; a request that may change something must carry its CSRF token."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None:
            raise Unauthenticated(
                "No credentials: send `Authorization: Bearer <key>` or `x-api-key: <key>`, or sign in."
            )
        session = await self.sessions.resume(cookie)
        if session is None:
            raise Unauthenticated("The session has expired or ended; sign in again.")
        if request.method not in SAFE_METHODS:
            self.sessions.check_csrf(request, session)
        return session

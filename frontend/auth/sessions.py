"""Browser sessions: a signed HttpOnly cookie naming a session kept in the store, and a CSRF token.

The cookie is `<token>.<expires_at>.<signature>`, the signature an HMAC-SHA256 of the rest under
the server's session secret: forged or expired cookies are refused without a store lookup. The
store keeps only a hash of the token, and deleting it (logout) ends the session for good.

CSRF protection is a signed double submit: the CSRF token is an HMAC of the session token, given
at login in the body and in a cookie the page's script can read; a cookie-authenticated POST must
send it back in `X-CSRF-Token`. Another site can neither read that cookie nor compute the token,
and SameSite=Lax already keeps browsers from sending the session cookie on its cross-site POSTs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from frontend.auth.local_secrets import random_token
from frontend.errors import CsrfRejected
from frontend.store import Store
from frontend.store.accounts import Account

SESSION_COOKIE = "imagegen_session"
CSRF_COOKIE = "imagegen_csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Session:
    token: str
    account: Account
    expires_at: int


class Sessions:
    def __init__(self, store: Store, secret: str, ttl_seconds: int) -> None:
        self.store = store
        self._secret = secret.encode()
        self.ttl_seconds = ttl_seconds

    async def start(self, account: Account) -> Session:
        session = Session(random_token(), account, int(time.time()) + self.ttl_seconds)
        await self.store.sessions.add(_token_hash(session.token), account.id, session.expires_at)
        return session

    async def resume(self, cookie: str) -> Session | None:
        """The session a cookie names, if its signature holds and it has neither expired nor ended."""
        token, _, rest = cookie.partition(".")
        expires, _, signature = rest.partition(".")
        if not expires.isdigit() or not hmac.compare_digest(
            signature.encode(), self._sign(f"{token}.{expires}").encode()
        ):
            return None
        now = time.time()
        if int(expires) <= now:
            return None
        account = await self.store.sessions.account(_token_hash(token), now)
        return None if account is None else Session(token, account, int(expires))

    async def end(self, session: Session) -> None:
        await self.store.sessions.delete(_token_hash(session.token))

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf:{session.token}")

    def check_csrf(self, request: Request, session: Session) -> None:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), self.csrf_token(session).encode()):
            raise CsrfRejected(f"A request authenticated by the session cookie must send `{CSRF_HEADER}`.")

    def set_cookies(self, response: Response, session: Session, secure: bool) -> None:
        """The session cookie (HttpOnly) and the CSRF cookie (readable by the page's script)."""
        max_age = session.expires_at - int(time.time())
        value = f"{session.token}.{session.expires_at}"
        for name, content, httponly in (
            (SESSION_COOKIE, f"{value}.{self._sign(value)}", True),
            (CSRF_COOKIE, self.csrf_token(session), False),
        ):
            response.set_cookie(name, content, max_age=max_age, httponly=httponly, secure=secure, samesite="lax")

    @staticmethod
    def clear_cookies(response: Response) -> None:
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            response.delete_cookie(name, samesite="lax")

    def _sign(self, message: str) -> str:
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

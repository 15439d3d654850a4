"""Headers every answer carries, the Studio's files and the API's JSON alike.

`Content-Security-Policy`: a page of this origin runs only this server's own scripts and styles,
fetches only from it, and no site may frame it (clickjacking); so an injected `<script>` or inline
handler never runs, and the API's answers, opened as pages, load nothing. `X-Content-Type-Options:
nosniff`: a browser reads a response only as the type it declares, never a JSON error as a script.

An ASGI middleware, so the router's 404s and the body limits' 413s carry them too; a 500 answered
outside every middleware gets them from its handler (`app.py`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""`img-src blob:`: the Studio shows the images it is answered (base64 in JSON) as blob: URLs."""
HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
_RAW_HEADERS = [(name.lower().encode(), value.encode()) for name, value in HEADERS.items()]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_RAW_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

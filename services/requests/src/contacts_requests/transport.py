"""HTTPS as the browser sees it. Behind a TLS proxy the service itself speaks plain HTTP: with
CONTACTS_FORWARDED_ALLOW_IPS naming the proxy, uvicorn takes the scheme from its
`X-Forwarded-Proto` (and from nobody else's), so that cookies are `Secure`; and every answer
over HTTPS tells the browser to use nothing else (HSTS)."""

from __future__ import annotations

from typing import Any

HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class StrictTransportSecurity:
    """ASGI middleware: HSTS on every response to an https request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), HSTS]
            await send(message)

        await self.app(scope, receive, send_with_hsts)

"""Who is calling: the identity provider's token, verified once per HTTP request before any
route runs (a cross-cutting step, like the body limit before it), so that routes and pages read
`request.state.nic` (and `request.state.agent`, whether the caller is a support agent) without
waiting on anything."""

from __future__ import annotations

import contextlib
from typing import Any

from contacts_shared.auth import Caller, NotAuthenticated, TokenVerifier
from starlette.requests import cookie_parser

SESSION_COOKIE = "contacts_session"


def token_of(headers: dict[bytes, bytes]) -> tuple[str | None, bool]:
    """(the token, whether it came from the session cookie): the `Authorization: Bearer` header
    wins over the cookie."""
    scheme, _, credentials = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), False
    session = cookie_parser(headers.get(b"cookie", b"").decode("latin-1")).get(SESSION_COOKIE)
    return (session, True) if session else (None, False)


class Identity:
    """ASGI middleware: leaves in `request.state` the caller's NIC (`nic`, None when there is
    no valid token), whether it came from the session cookie (`by_cookie`) and whether the caller
    is a support agent (`agent`)."""

    def __init__(self, app: Any, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            token, by_cookie = token_of(dict(scope.get("headers") or []))
            caller: Caller | None = None
            if token:
                with contextlib.suppress(NotAuthenticated):
                    caller = await self.verifier.verify(token)
            state = scope.setdefault("state", {})
            state["nic"] = caller.nic if caller else None
            state["by_cookie"] = by_cookie and caller is not None
            state["agent"] = caller is not None and caller.is_agent
        await self.app(scope, receive, send)

"""Which language a page is written in, decided once per page request before any route runs
(after `identity.Identity`, which says who is signed in): the signed-in account's language, as
the accounts replica holds it (one primary-key lookup); for nobody signed in, or an account not
known here, the browser's (Accept-Language). The routes' `render` reads `request.state.language`.

The JSON API, the static files and the API's documents are left alone: the API answers in
English whoever asks (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog
from contacts_shared.db import MAYBE_OUTAGE_ERRORS
from contacts_shared.i18n import from_accept_language, supported

from contacts_requests import replicas

log = structlog.get_logger("contacts.requests.pages")

# Not pages: the JSON API, its documents and the static files.
NOT_PAGES = ("/v1/", "/static/", "/docs", "/redoc", "/openapi.json")
# The lookup is one primary-key read; a database that does not answer in this long is away, and
# the page itself will say so.
LOOKUP_TIMEOUT = 2.0


def is_page(path: str) -> bool:
    return not path.startswith(NOT_PAGES)


class PageLanguage:
    """ASGI middleware: leaves in `request.state.language` the language of a page request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and is_page(scope.get("path", "")):
            state = scope.setdefault("state", {})
            language = await self._account_language(scope, state.get("nic"))
            if language is None:
                headers = dict(scope.get("headers") or [])
                language = from_accept_language(headers.get(b"accept-language", b"").decode("latin-1"))
            state["language"] = language
        await self.app(scope, receive, send)

    @staticmethod
    async def _account_language(scope: dict[str, Any], nic: str | None) -> str | None:
        pool: asyncpg.Pool | None = getattr(scope["app"].state, "pool", None) if "app" in scope else None
        if nic is None or pool is None:
            return None
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT), pool.acquire() as conn:
                tag = await replicas.language_of(conn, nic)
        except (*MAYBE_OUTAGE_ERRORS, asyncpg.PostgresError, TimeoutError) as exc:
            # The page goes on (in the browser's language) and meets the outage its own way.
            log.warning("language of the account not read", nic=nic, error=type(exc).__name__)
            return None
        return supported(tag) if tag is not None else None

"""What keeps the pages safe: who is signed in, the forms' CSRF check (a token bound to a random
cookie, signed double submit, and a foreign `Origin` refused), and redirects only to this site."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qsl, urlsplit

from fastapi import Request

from contacts_requests.web import NotSignedIn, current_nic

CSRF_COOKIE = "contacts_csrf"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 16_384


class SignInNeeded(Exception):
    pass


class CsrfRefused(Exception):
    pass


def signed_in(request: Request) -> str | None:
    try:
        return current_nic(request)
    except NotSignedIn:
        return None


def signed_in_nic(request: Request) -> str:
    nic = signed_in(request)
    if nic is None:
        raise SignInNeeded
    return nic


def jwt_secret(request: Request) -> str:
    return request.app.state.jwt_secret


def csrf_for(request: Request, seed: str) -> str:
    return hmac.new(jwt_secret(request).encode(), f"csrf|{seed}".encode(), hashlib.sha256).hexdigest()


def csrf_seed(request: Request) -> str:
    """The browser's CSRF cookie value, or a new one that `render` will set."""
    seed = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf_seed", None)
    if not seed:
        seed = request.state.new_csrf_seed = secrets.token_urlsafe(32)
    return seed


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


async def read_form(request: Request) -> dict[str, str]:
    """The posted form fields, after the CSRF checks (Origin when sent, then the token)."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise CsrfRefused
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise CsrfRefused
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise CsrfRefused
    form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    seed = request.cookies.get(CSRF_COOKIE)
    if not seed or not hmac.compare_digest(form.get(CSRF_FIELD, ""), csrf_for(request, seed)):
        raise CsrfRefused
    return form


def local_target(target: str | None, default: str = "/contacts") -> str:
    # Only paths of this site: `//evil.example` or `https://…` would be an open redirect.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target

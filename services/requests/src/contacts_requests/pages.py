"""The web pages of spec section 6: My contacts, My requests, the confirm page, sign-in.

Server-rendered (Jinja2), no script needed. The pages are a second face of the same use
cases as the JSON API: they call `handlers` and `store`, and ask the pure `domain` rules what
a NIC may do, so a button is shown exactly when the rules would accept its action.

Every POST form carries a CSRF token bound to a random cookie (signed double submit) and a
foreign `Origin` is refused. Every GET is free of side effects (opening an email link changes
nothing until a button is pressed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import asyncpg
import structlog
from contacts_shared.auth import NotAuthenticated, mint_token
from contacts_shared.contracts import ContactType, RequestState, normalize_nic, utcnow
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from contacts_requests import handlers, replicas, store, views
from contacts_requests.domain import (
    ROLE_NAMES,
    ConfirmerState,
    ContactChange,
    Kind,
    Refusal,
    may_view,
    refusal_to_change,
)
from contacts_requests.identity import SESSION_COOKIE
from contacts_requests.web import (
    NotSignedIn,
    current_nic,
    cursor_after,
    parse_cursor,
    status_of,
)

log = structlog.get_logger("contacts.requests.pages")

CSRF_COOKIE = "contacts_csrf"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 16_384
DEV_SESSION_SECONDS = 8 * 3600
PAGE_SIZE = 50
STATIC_DIR = Path(__file__).parent / "static"

# What each state means to a customer.
STATE_LABELS = {
    RequestState.checking: "Being checked",
    RequestState.rejected: "Refused",
    RequestState.validating: "Waiting for confirmation",
    RequestState.declined: "Declined",
    RequestState.cancelled: "Cancelled",
    RequestState.expired: "Expired",
    RequestState.applying: "Confirmed, being applied",
    RequestState.failed: "Failed",
    RequestState.done: "Done",
}
STATE_HELP = {
    RequestState.checking: "We are checking invoices and payment methods; the validation codes are emailed next.",
    RequestState.validating: "Each person asked must confirm with the validation code sent to them by email.",
    RequestState.applying: "Everybody confirmed; the change is being applied.",
    RequestState.done: "The change was made.",
    RequestState.expired: "Nobody finished confirming in time; nothing was changed.",
}
# Messages shown after a redirect; the query names one of these, it never carries text.
NOTICES = {
    "submitted": "Your request was sent. The people who must confirm it receive a validation code by email.",
    "accept": "You accepted this request.",
    "decline": "You declined this request; nothing will change.",
    "resend": "New validation codes were sent by email; the previous ones no longer work.",
    "cancel": "You cancelled this request; nothing will change.",
    "signed-out": "You are signed out.",
}
ACTIONS = ("accept", "decline", "resend", "cancel")

_templates = Environment(
    loader=PackageLoader("contacts_requests", "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: Any) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


_templates.filters["when"] = _when
_templates.globals.update(role_names=ROLE_NAMES, state_labels=STATE_LABELS, state_help=STATE_HELP)


class SignInNeeded(Exception):
    pass


class CsrfRefused(Exception):
    pass


router = APIRouter(include_in_schema=False)


def install_pages(app: FastAPI, *, request_ttl: timedelta, dev_login: bool) -> None:
    app.state.request_ttl = request_ttl
    app.state.dev_login = dev_login
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, _: SignInNeeded) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?{urlencode({'next': target})}", status_code=303)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _: CsrfRefused) -> Response:
        log.warning("form refused: missing or wrong CSRF token or foreign origin", path=request.url.path)
        return render(
            request,
            "error.html",
            status=403,
            title="This form cannot be accepted",
            message="The form expired or was sent from another site, so nothing was changed. "
            "Go back, reload the page and try again.",
        )


# --- identity, CSRF, rendering ----------------------------------------------------------------------


def _signed_in(request: Request) -> str | None:
    try:
        return current_nic(request)
    except NotSignedIn:
        return None


def _me(request: Request) -> str:
    nic = _signed_in(request)
    if nic is None:
        raise SignInNeeded
    return nic


def _secret(request: Request) -> str:
    return request.app.state.jwt_secret


def _csrf_for(request: Request, seed: str) -> str:
    return hmac.new(_secret(request).encode(), f"csrf|{seed}".encode(), hashlib.sha256).hexdigest()


def _csrf_seed(request: Request) -> str:
    """The browser's CSRF cookie value, or a new one that `render` will set."""
    seed = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf_seed", None)
    if not seed:
        seed = request.state.new_csrf_seed = secrets.token_urlsafe(32)
    return seed


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("me", _signed_in(request))
    context.setdefault("notice", NOTICES.get(request.query_params.get("notice", "")))
    context.setdefault("refresh", False)
    html = _templates.get_template(template).render(
        request=request,
        csrf=_csrf_for(request, _csrf_seed(request)),
        dev_login=request.app.state.dev_login,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    # Pages hold personal data and validation codes: never cached, never sent to other sites as referrer (same-origin keeps the Origin header of our own forms).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    if getattr(request.state, "new_csrf_seed", None):
        response.set_cookie(
            CSRF_COOKIE, request.state.new_csrf_seed, httponly=True, samesite="lax", secure=_https(request), path="/"
        )
    return response


def not_found_page(request: Request) -> HTMLResponse:
    return render(
        request,
        "error.html",
        status=404,
        title="Not found",
        message="There is no such service or request among those you are a contact of. "
        "If a link was sent to another of your accounts, sign out and sign in as that account.",
    )


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
    if not seed or not hmac.compare_digest(form.get(CSRF_FIELD, ""), _csrf_for(request, seed)):
        raise CsrfRefused
    return form


def _local_target(target: str | None, default: str = "/contacts") -> str:
    # Only paths of this site: `//evil.example` or `https://…` would be an open redirect.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


# --- what the rules allow, asked of the domain --------------------------------------------------


def _change_of(view: dict[str, Any]) -> ContactChange:
    return ContactChange(
        id=view["id"],
        service=view["service"],
        type=ContactType(view["type"]),
        from_=view["from"],
        to=view["to"],
        requester=view["requester"],
        state=RequestState(view["state"]),
        confirmers={c["nic"]: c["state"] for c in view["confirmers"]},
    )


def describe(view: dict[str, Any], me: str) -> dict[str, Any]:
    """A request as the pages show it: its view plus progress and the actions `me` may take."""
    change = _change_of(view)
    state = change.state
    by_state: dict[str, list[str]] = {ConfirmerState.accepted: [], ConfirmerState.declined: [], ConfirmerState.pending: []}
    for nic, answer in change.confirmers.items():
        by_state[answer].append(nic)
    parts = []
    if by_state[ConfirmerState.accepted]:
        parts.append("accepted by " + ", ".join(by_state[ConfirmerState.accepted]))
    if by_state[ConfirmerState.declined]:
        parts.append("declined by " + ", ".join(by_state[ConfirmerState.declined]))
    if state == RequestState.rejected:
        parts = ["nobody was asked to confirm"]  # refused before any validation code was sent
    elif by_state[ConfirmerState.pending]:
        lead = {
            RequestState.validating: "waiting for ",
            RequestState.checking: "to be confirmed by ",
        }.get(state, "no answer from ")
        parts.append(lead + ", ".join(by_state[ConfirmerState.pending]))
    return {
        **view,
        "state_enum": state,
        "progress": ", ".join(parts),
        "waiting_for": by_state[ConfirmerState.pending] if state == RequestState.validating else [],
        "may_answer": change.may_answer(me),
        "may_resend": change.may_resend(me),
        "may_cancel": change.may_cancel(me),
        "is_confirmer": me in change.confirmers,
        "my_answer": change.confirmers.get(me),
    }


# --- pages ----------------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse("/contacts" if _signed_in(request) else "/signin", status_code=303)


@router.get("/signin")
async def signin_page(request: Request, next: str | None = None) -> Response:
    return render(request, "signin.html", next=_local_target(next), error=None, value="")


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await read_form(request)
    target = _local_target(form.get("next"))
    secret = _secret(request)
    value = form.get("nic" if request.app.state.dev_login else "jwt", "").strip()
    try:
        if request.app.state.dev_login:
            token = mint_token(secret, normalize_nic(value), DEV_SESSION_SECONDS)
        else:
            await request.app.state.verifier.verify(value)
            token = value
    except (ValueError, NotAuthenticated):
        error = (
            "Type a NIC handle such as aa00000-ovh."
            if request.app.state.dev_login
            else "This identity token is not valid or has expired; sign in again with the identity provider."
        )
        shown = value if request.app.state.dev_login else ""
        return render(request, "signin.html", status=422, next=target, error=error, value=shown)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=_https(request), path="/")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    await read_form(request)
    response = RedirectResponse("/signin?notice=signed-out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_https(request))
    return response


@router.get("/contacts")
async def my_contacts(request: Request) -> Response:
    me = _me(request)
    async with _pool(request).acquire() as conn:
        rows = await replicas.services_of(conn, me)
    services = [
        {
            "service": r["service"],
            "type": r["type"],
            "roles": [ROLE_NAMES[t] for t in ContactType if r[t.value] == me],
            "contacts": {t.value: r[t.value] for t in ContactType},
        }
        for r in rows
    ]
    return render(request, "contacts.html", services=services)


async def _modify_form(
    request: Request,
    me: str,
    service_id: str,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    async with _pool(request).acquire() as conn:
        service = await replicas.get_service(conn, service_id)
        if service is None or not service.roles_of(me):
            return not_found_page(request)
        row = next((r for r in await replicas.services_of(conn, me) if r["service"] == service_id), None)
        open_requests = await store.open_requests_for(conn, service_id)
    fields = []
    for ctype in ContactType:
        fields.append(
            {
                "name": ctype.value,
                "label": f"{ROLE_NAMES[ctype].capitalize()} contact",
                "current": service.holder(ctype),
                "value": (values or {}).get(ctype.value, service.holder(ctype)),
                "locked_because": refusal_to_change(me, service, ctype),
                "open_request": open_requests.get(ctype),
                "error": (errors or {}).get(ctype.value),
            }
        )
    return render(
        request,
        "modify.html",
        status=status,
        service=service_id,
        service_type=row["type"] if row else "",
        roles=[ROLE_NAMES[t] for t in service.roles_of(me)],
        fields=fields,
        form_error=(errors or {}).get("form"),
        idempotency_key=secrets.token_urlsafe(16),
    )


@router.get("/contacts/modify")
async def modify_page(request: Request, service: str = "") -> Response:
    return await _modify_form(request, _me(request), service)


@router.post("/contacts/modify")
async def modify(request: Request) -> Response:
    me = _me(request)
    form = await read_form(request)
    service_id = form.get("service", "")
    async with _pool(request).acquire() as conn:
        service = await replicas.get_service(conn, service_id)
    if service is None or not service.roles_of(me):
        return not_found_page(request)
    values = {t.value: form[t.value] for t in ContactType if t.value in form}
    errors: dict[str, str] = {}
    changes: dict[ContactType, str] = {}
    for ctype in ContactType:
        typed = values.get(ctype.value, "").strip()
        if not typed:
            continue  # an empty or locked field means "keep the current contact"
        try:
            nic = normalize_nic(typed)
        except ValueError:
            errors[ctype.value] = f"“{typed}” is not a NIC handle; it looks like aa00000-ovh."
            continue
        if nic != service.holder(ctype):
            changes[ctype] = nic
    if not errors and not changes:
        errors["form"] = "Nothing to change: type the NIC handle of the new contact in at least one field."
    if errors:
        return await _modify_form(request, me, service_id, values=values, errors=errors, status=422)
    try:
        async with _pool(request).acquire() as conn, conn.transaction():
            ids = await handlers.submit(
                conn,
                requester=me,
                service_id=service_id,
                changes=changes,
                idempotency_key=form.get("idempotency_key") or None,
                request_ttl=request.app.state.request_ttl,
                rate_limits=request.app.state.rate_limits,
            )
    except Refusal as refusal:
        if refusal.kind is Kind.not_found:
            return not_found_page(request)
        field = refusal.field if refusal.field in values else "form"
        return await _modify_form(
            request, me, service_id, values=values, errors={field: refusal.detail}, status=status_of(refusal)
        )
    if len(ids) == 1:
        return RedirectResponse(f"/requests/{ids[0]}?notice=submitted", status_code=303)
    return RedirectResponse("/requests?notice=submitted", status_code=303)


@router.get("/requests")
async def my_requests(request: Request, state: str = "", cursor: str = "") -> Response:
    me = _me(request)
    wanted = state if state in {s.value for s in RequestState} else None
    try:
        before = parse_cursor(cursor) if cursor else None
    except Refusal:
        before = None
    async with _pool(request).acquire() as conn:
        ids = await views.requests_of(conn, me, state=wanted, role=None, limit=PAGE_SIZE + 1, before=before)
        shown = [await views.request_view(conn, i) for i in ids[:PAGE_SIZE]]
    items = [describe(v, me) for v in shown if v is not None]
    older = None
    if len(ids) > PAGE_SIZE and items:
        older = "/requests?" + urlencode(
            {**({"state": wanted} if wanted else {}), "cursor": cursor_after(items[-1]["created_at"], uuid.UUID(items[-1]["id"]))}
        )
    return render(request, "requests.html", items=items, state=wanted or "", states=list(RequestState), older=older)


async def _request_page(
    request: Request, me: str, request_id: str, *, token: str = "", error: str | None = None, status: int = 200
) -> Response:
    try:
        rid = uuid.UUID(request_id)
    except ValueError:
        return not_found_page(request)
    async with _pool(request).acquire() as conn:
        view = await views.request_view(conn, rid)
    if view is None or not may_view(me, view["requester"], view["from"], view["to"]):
        return not_found_page(request)
    item = describe(view, me)
    return render(
        request,
        "request.html",
        status=status,
        item=item,
        token=token,
        error=error,
        # While the system works (seconds at most) the page follows it; never over a form.
        refresh=item["state_enum"] in (RequestState.checking, RequestState.applying) and not item["may_answer"],
    )


@router.get("/requests/{request_id}")
async def request_page(request: Request, request_id: str, token: str = "") -> Response:
    # The email link lands here; it only shows the request, with the token ready in the form.
    return await _request_page(request, _me(request), request_id, token=token[:200])


@router.post("/requests/{request_id}")
async def request_action(request: Request, request_id: str) -> Response:
    me = _me(request)
    form = await read_form(request)
    action = form.get("action", "")
    token = form.get("token", "").strip()
    try:
        rid = uuid.UUID(request_id)
    except ValueError:
        return not_found_page(request)
    if action not in ACTIONS:
        return await _request_page(request, me, request_id, token=token, error="Choose one of the buttons.", status=422)
    pool = _pool(request)
    try:
        if action in ("accept", "decline"):
            if not token:
                return await _request_page(
                    request, me, request_id, error="Type the validation code from your email.", status=422
                )
            await handlers.answer(pool, request_id=rid, nic=me, token=token[:200], accept=action == "accept", now=utcnow())
        else:
            async with pool.acquire() as conn, conn.transaction():
                if action == "resend":
                    await handlers.resend(conn, request_id=rid, nic=me, rate_limits=request.app.state.rate_limits)
                else:
                    await handlers.cancel(conn, request_id=rid, nic=me)
    except Refusal as refusal:
        if refusal.kind is Kind.not_found:
            return not_found_page(request)
        return await _request_page(request, me, request_id, token=token, error=refusal.detail, status=status_of(refusal))
    return RedirectResponse(f"/requests/{quote(str(rid))}?notice={action}", status_code=303)

"""The web pages of spec section 6: My contacts (`contacts_page`), My requests, the confirm page, sign-in.

Server-rendered (Jinja2), no script needed. The pages are a second face of the same use
cases as the JSON API: they call `handlers`, and ask the pure `domain` rules what a NIC may
do, so a button is shown exactly when the rules would accept its action (`page_views`).

Every POST form passes the CSRF check of `page_guard`. Every GET is free of side effects
(opening an email link changes nothing until a button is pressed).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

import asyncpg
import structlog
from contacts_shared.auth import SUPPORT_ROLE, NotAuthenticated, mint_token
from contacts_shared.contracts import ContactType, RequestState, normalize_nic, utcnow
from contacts_shared.i18n import _l
from contacts_shared.wording import role_text
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from contacts_requests import contacts_page, handlers, replicas, store, views
from contacts_requests.domain import (
    Kind,
    Refusal,
    may_view,
    refusal_to_change,
)
from contacts_requests.identity import SESSION_COOKIE
from contacts_requests.nic_fields import typed_changes
from contacts_requests.page_guard import (
    CsrfRefused,
    SignInNeeded,
    is_https,
    jwt_secret,
    local_target,
    read_form,
    signed_in,
    signed_in_nic,
)
from contacts_requests.page_views import (
    CONTACT_LABELS,
    describe,
    not_found_page,
    render,
    rows_by_batch,
)
from contacts_requests.web import (
    page_of,
    parse_cursor,
    printable,
    status_of,
)

log = structlog.get_logger("contacts.requests.pages")

DEV_SESSION_SECONDS = 8 * 3600
PAGE_SIZE = 50
STATIC_DIR = Path(__file__).parent / "static"

ACTIONS = ("accept", "decline", "resend", "cancel")

router = APIRouter(include_in_schema=False)


def install_pages(app: FastAPI, *, request_ttl: timedelta, dev_login: bool) -> None:
    app.state.request_ttl = request_ttl
    app.state.dev_login = dev_login
    app.include_router(router)
    app.include_router(contacts_page.router)
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
            title=_l("This form cannot be accepted"),
            message=_l(
                "The form expired or was sent from another site, so nothing was changed. Go back, reload the page and try again."
            ),
        )


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


# --- pages ----------------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse("/contacts" if signed_in(request) else "/signin", status_code=303)


@router.get("/signin")
async def signin_page(request: Request, next: str | None = None) -> Response:
    return render(request, "signin.html", next=local_target(next), error=None, value="", agent=False)


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await read_form(request)
    target = local_target(form.get("next"))
    secret = jwt_secret(request)
    value = form.get("nic" if request.app.state.dev_login else "jwt", "").strip()
    # Development only: the box makes a support agent (in production the JWT's roles decide).
    agent = request.app.state.dev_login and form.get("agent") == "1"
    try:
        if request.app.state.dev_login:
            roles = [SUPPORT_ROLE] if agent else []
            token = mint_token(secret, normalize_nic(value), DEV_SESSION_SECONDS, roles=roles)
        else:
            await request.app.state.verifier.verify(value)
            token = value
    except (ValueError, NotAuthenticated):
        error = (
            _l("Type a NIC handle such as aa00000-ovh.")
            if request.app.state.dev_login
            else _l("This identity token is not valid or has expired; sign in again with the identity provider.")
        )
        shown = value if request.app.state.dev_login else ""
        return render(request, "signin.html", status=422, next=target, error=error, value=shown, agent=agent)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=is_https(request), path="/")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    await read_form(request)
    response = RedirectResponse("/signin?notice=signed-out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=is_https(request))
    return response


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
        row = next(iter(await views.my_contacts(conn, me, service=service_id)), None)
        open_requests = await store.open_requests_for(conn, service_id)
    fields = []
    for ctype in ContactType:
        fields.append(
            {
                "name": ctype.value,
                "label": CONTACT_LABELS[ctype],
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
        roles=[role_text(t) for t in service.roles_of(me)],
        fields=fields,
        form_error=(errors or {}).get("form"),
        idempotency_key=secrets.token_urlsafe(16),
    )


@router.get("/contacts/modify")
async def modify_page(request: Request, service: str = "") -> Response:
    return await _modify_form(request, signed_in_nic(request), service)


@router.post("/contacts/modify")
async def modify(request: Request) -> Response:
    me = signed_in_nic(request)
    form = await read_form(request)
    service_id = form.get("service", "")
    async with _pool(request).acquire() as conn:
        service = await replicas.get_service(conn, service_id)
    if service is None or not service.roles_of(me):
        return not_found_page(request)
    values = {t.value: form[t.value] for t in ContactType if t.value in form}
    # An empty or locked field, or the current holder typed again, keeps the current contact.
    typed, errors = typed_changes(values)
    changes = {ctype: nic for ctype, nic in typed.items() if nic != service.holder(ctype)}
    if not errors and not changes:
        errors["form"] = _l("Nothing to change: type the NIC handle of the new contact in at least one field.")
    if errors:
        return await _modify_form(request, me, service_id, values=values, errors=errors, status=422)
    try:
        async with _pool(request).acquire() as conn:
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
async def my_requests(request: Request, state: str = "", cursor: str = "", service: str = "") -> Response:
    me = signed_in_nic(request)
    wanted = state if state in {s.value for s in RequestState} else None
    service = printable(service, 255)
    try:
        before = parse_cursor(cursor) if cursor else None
    except Refusal:
        before = None
    async with _pool(request).acquire() as conn:
        ids = await views.requests_of(conn, me, state=wanted, role=None, limit=PAGE_SIZE + 1, before=before, service=service or None)
        shown, next_cursor = await page_of(conn, ids, PAGE_SIZE)
    items = [describe(v, me) for v in shown]
    kept = {name: value for name, value in (("state", wanted), ("service", service)) if value}
    older = "/requests?" + urlencode({**kept, "cursor": next_cursor}) if next_cursor else None
    rows = rows_by_batch(items)
    return render(request, "requests.html", items=items, rows=rows, state=wanted or "", service=service, states=list(RequestState), older=older)


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
    return await _request_page(request, signed_in_nic(request), request_id, token=token[:200])


@router.post("/requests/{request_id}")
async def request_action(request: Request, request_id: str) -> Response:
    me = signed_in_nic(request)
    form = await read_form(request)
    action = form.get("action", "")
    token = form.get("token", "").strip()
    try:
        rid = uuid.UUID(request_id)
    except ValueError:
        return not_found_page(request)
    if action not in ACTIONS:
        return await _request_page(request, me, request_id, token=token, error=_l("Choose one of the buttons."), status=422)
    pool = _pool(request)
    try:
        if action in ("accept", "decline"):
            if not token:
                return await _request_page(
                    request, me, request_id, error=_l("Type the validation code from your email."), status=422
                )
            await handlers.answer(pool, request_id=rid, nic=me, token=token[:200], accept=action == "accept", now=utcnow())
        else:
            async with pool.acquire() as conn:
                if action == "resend":
                    await handlers.resend(conn, request_id=rid, nic=me, rate_limits=request.app.state.rate_limits)
                else:
                    await handlers.cancel(conn, request_id=rid, nic=me)
    except Refusal as refusal:
        if refusal.kind is Kind.not_found:
            return not_found_page(request)
        return await _request_page(request, me, request_id, token=token, error=refusal.detail, status=status_of(refusal))
    return RedirectResponse(f"/requests/{quote(str(rid))}?notice={action}", status_code=303)

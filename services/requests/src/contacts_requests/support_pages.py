"""The support desk's pages (`/support/...`): a second face of `support_desk`, as `pages` is of
`handlers` and `support_api` is its JSON face. An agent looks a service or an account up, opens
any request, and cancels it, unlocks a confirmer's code or has new codes sent, each for a reason.

Not signed in: the sign-in page, as everywhere. Signed in but not a support agent (the token's
role, `request.state.agent`): the ordinary 404 page on every `/support` path, GET or POST,
decided before any form is read (`NotAnAgent`), as the API's `SupportOnly` does for
`/v1/support/`. The forms show what the domain would accept; every POST passes the pages' CSRF
check, and a refusal is shown on the page with its status, the typed reason kept.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import asyncpg
from contacts_shared.contracts import RequestState, normalize_nic
from contacts_shared.i18n import _l
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from contacts_requests import support_desk
from contacts_requests.domain import Refusal, refused
from contacts_requests.page_guard import read_form, signed_in_nic
from contacts_requests.page_views import describe, not_found_page, render
from contacts_requests.views import change_of
from contacts_requests.web import page_of, parse_cursor, status_of

PAGE_SIZE = 50  # as My requests
ACTIONS = ("cancel", "resend", "unlock")
# Any reason will do to ask the domain whether an action would be accepted (it is never recorded).
PROBE_REASON = "probe"

router = APIRouter(prefix="/support", include_in_schema=False)


class NotAnAgent(Exception):
    """Signed in, but without the support role: answered as a page that does not exist."""


async def _agent(request: Request) -> str:
    # A dependency: it runs before the route reads a form, so a customer learns nothing more
    # than "not found" (no CSRF refusal, no validation message) from any /support path.
    nic = signed_in_nic(request)  # SignInNeeded: to the sign-in page, back here afterwards
    if not request.state.agent:
        raise NotAnAgent
    return nic


Agent = Annotated[str, Depends(_agent)]


def install_support_pages(app: FastAPI) -> None:
    app.include_router(router)

    @app.exception_handler(NotAnAgent)
    async def _not_an_agent(request: Request, _: NotAnAgent) -> Response:
        return not_found_page(request)


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def _before(cursor: str) -> support_desk.Before:
    # A cursor that is not ours shows the first page, as on My requests.
    try:
        return parse_cursor(cursor) if cursor else None
    except Refusal:
        return None


def _lookup(
    request: Request,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    form_error: str | None = None,
    status: int = 200,
) -> Response:
    """The lookup page; also what an agent sees, at 404, for what is not found (the forms are
    where to try again)."""
    return render(
        request,
        "support.html",
        status=status,
        values={"service": "", "nic": "", **(values or {})},
        errors=errors or {},
        form_error=form_error,
    )


def _no_request(request: Request) -> Response:
    return _lookup(request, form_error=_l("There is no request with this id."), status=404)


# --- looking up -----------------------------------------------------------------------------------


@router.get("")
async def lookup(request: Request, agent: Agent) -> Response:
    # Both forms are GET forms to this page (no script to build a path): a filled one is sent on.
    query = request.query_params
    if "service" in query:
        service = query["service"].strip()
        if not service:
            return _lookup(request, errors={"service": _l("Type a service id, such as shop-example.web-hosting.")}, status=422)
        return RedirectResponse(f"/support/services/{quote(service, safe='')}", status_code=303)
    if "nic" in query:
        typed = query["nic"].strip()
        try:
            nic = normalize_nic(typed)
        except ValueError:
            error = _l("“%(typed)s” is not a NIC handle; it looks like aa00000-ovh.", typed=typed) if typed else _l("Type a NIC handle, such as aa00000-ovh.")
            return _lookup(request, values={"nic": typed}, errors={"nic": error}, status=422)
        return RedirectResponse(f"/support/accounts/{quote(nic, safe='')}", status_code=303)
    return _lookup(request)


def _older(path: str, next_cursor: str | None, **query: str) -> str | None:
    """The link to the next page, keeping the filter."""
    if not next_cursor:
        return None
    return f"{path}?" + urlencode({**{k: v for k, v in query.items() if v}, "cursor": next_cursor})


@router.get("/services/{service:path}")
async def service_page(request: Request, service: str, agent: Agent, cursor: str = "") -> Response:
    try:
        async with _pool(request).acquire() as conn:
            found = await support_desk.service_file(conn, service, limit=PAGE_SIZE + 1, before=_before(cursor))
            items, next_cursor = await page_of(conn, found["ids"], PAGE_SIZE, for_support=True)
    except Refusal:  # not found: the only refusal of a lookup
        error = _l("No service “%(service)s” is known, and no request names it.", service=service)
        return _lookup(request, values={"service": service}, errors={"service": error}, status=404)
    return render(
        request,
        "support_service.html",
        service_id=service,
        service=found["service"],
        items=items,
        paged=bool(cursor),
        older=_older(f"/support/services/{quote(service, safe='')}", next_cursor),
    )


@router.get("/accounts/{nic}")
async def account_page(request: Request, nic: str, agent: Agent, state: str = "", cursor: str = "") -> Response:
    try:
        nic = normalize_nic(nic)
    except ValueError:
        error = _l("“%(typed)s” is not a NIC handle; it looks like aa00000-ovh.", typed=nic)
        return _lookup(request, values={"nic": nic}, errors={"nic": error}, status=422)
    wanted = RequestState(state) if state in {s.value for s in RequestState} else None
    try:
        async with _pool(request).acquire() as conn:
            found = await support_desk.account_file(conn, nic, state=wanted, limit=PAGE_SIZE + 1, before=_before(cursor))
            items, next_cursor = await page_of(conn, found["ids"], PAGE_SIZE, for_support=True)
    except Refusal:
        error = _l("No account %(nic)s is known, and it is party to no request.", nic=nic)
        return _lookup(request, values={"nic": nic}, errors={"nic": error}, status=404)
    return render(
        request,
        "support_account.html",
        nic=nic,
        account=found["account"],
        items=items,
        state=wanted.value if wanted else "",
        states=list(RequestState),
        paged=bool(cursor),
        older=_older(f"/support/accounts/{quote(nic, safe='')}", next_cursor, state=wanted.value if wanted else ""),
    )


# --- one request, and acting on it ----------------------------------------------------------------


def _allowed(view: dict[str, Any], agent: str) -> dict[str, Any]:
    """What the domain would let the agent do with the request as it is: a form is shown exactly
    when its action would be accepted (but for a resend to an account deleted meanwhile, which
    the use case refuses with its own words)."""
    change = change_of(view, {c["nic"]: c["state"] for c in view["confirmers"]})
    return {
        "cancel": refused(change.cancel_by_support, agent, PROBE_REASON) is None,
        "resend": refused(change.resend_by_support, agent, PROBE_REASON, change.confirmers) is None,
        "unlock": [
            c["nic"]
            for c in view["confirmers"]
            if refused(partial(change.unlock, locked=c["locked"]), agent, c["nic"], PROBE_REASON) is None
        ],
    }


async def _request_page(
    request: Request, agent: str, request_id: str, *, posted: dict[str, Any] | None = None, status: int = 200
) -> Response:
    """The request as an agent sees it. `posted`: the action just refused (its action, reason,
    the refusal's words and field), to show the error where it belongs, the reason kept."""
    try:
        rid = uuid.UUID(request_id)
    except ValueError:
        return _no_request(request)
    try:
        async with _pool(request).acquire() as conn:
            view = await support_desk.request_file(conn, rid)
    except Refusal:
        return _no_request(request)
    allowed = _allowed(view, agent)
    if posted:
        # Next to the reason of the form it came from, while that form is still offered;
        # otherwise (the request moved on meanwhile, say) above the forms.
        shown = allowed["unlock"] if posted["action"] == "unlock" else allowed.get(posted["action"])
        posted["inline"] = posted["field"] == "reason" and bool(shown)
    return render(
        request,
        "support_request.html",
        status=status,
        item=describe(view, agent),
        allowed=allowed,
        posted=posted or {"action": "", "reason": "", "error": None, "field": None, "inline": False},
    )


@router.get("/requests/{request_id}")
async def request_page(request: Request, request_id: str, agent: Agent) -> Response:
    return await _request_page(request, agent, request_id)


@router.post("/requests/{request_id}")
async def request_action(request: Request, request_id: str, agent: Agent) -> Response:
    form = await read_form(request)  # after `Agent`: a customer never gets this far
    action, reason, nic = form.get("action", ""), form.get("reason", ""), form.get("nic", "").strip()
    posted: dict[str, Any] = {"action": action, "reason": reason, "field": None}
    try:
        rid = uuid.UUID(request_id)
    except ValueError:
        return _no_request(request)
    if action not in ACTIONS:
        posted["error"] = _l("Choose one of the buttons.")
        return await _request_page(request, agent, request_id, posted=posted, status=422)
    try:
        async with _pool(request).acquire() as conn:
            if action == "cancel":
                await support_desk.cancel(conn, request_id=rid, agent=agent, reason=reason)
            elif action == "resend":
                await support_desk.resend(conn, request_id=rid, agent=agent, reason=reason)
            else:
                await support_desk.unlock(conn, request_id=rid, agent=agent, nic=nic, reason=reason)
    except Refusal as refusal:
        posted.update(error=refusal.detail, field=refusal.field)
        return await _request_page(request, agent, request_id, posted=posted, status=status_of(refusal))
    return RedirectResponse(f"/support/requests/{quote(str(rid))}?notice=support-{action}", status_code=303)


# Last: any other /support path or method, GET or POST, is not found (to a customer, the
# ordinary 404 page; without these, FastAPI's own 404 or 405 in JSON).
@router.api_route("/{rest:path}", methods=["GET", "POST"])
@router.post("")
async def elsewhere(request: Request, agent: Agent, rest: str = "") -> Response:
    if not rest and request.method == "GET":  # /support/
        return RedirectResponse("/support", status_code=303)
    return _lookup(request, form_error=_l("There is no such page of the support desk."), status=404)


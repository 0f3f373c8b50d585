"""What the pages show: the templates, the words for each state, and a request as a customer
sees it (its progress, and the buttons the domain's rules would accept), with the headers every
page carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contacts_shared.contracts import RequestState
from contacts_shared.wording import ROLE_NAMES, display_time
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from contacts_requests.contact_change import ConfirmerState
from contacts_requests.page_guard import (
    CSRF_COOKIE,
    csrf_for,
    csrf_seed,
    is_https,
    signed_in,
)
from contacts_requests.views import change_of

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
    # The support desk's actions (support_pages).
    "support-cancel": "The request was cancelled; its requester and new contact are told by email, with your reason.",
    "support-resend": "New validation codes were sent to the confirmers who have not answered; the previous ones no longer work.",
    "support-unlock": "The validation code was unlocked: its holder can use it again.",
}

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
    return display_time(value) if value else ""


_templates.filters["when"] = _when
_templates.filters["role_name"] = ROLE_NAMES.__getitem__
_templates.globals.update(role_names=ROLE_NAMES, state_labels=STATE_LABELS, state_help=STATE_HELP)


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("me", signed_in(request))
    context.setdefault("notice", NOTICES.get(request.query_params.get("notice", "")))
    context.setdefault("refresh", False)
    html = _templates.get_template(template).render(
        request=request,
        csrf=csrf_for(request, csrf_seed(request)),
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
            CSRF_COOKIE, request.state.new_csrf_seed, httponly=True, samesite="lax", secure=is_https(request), path="/"
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


def describe(view: dict[str, Any], me: str) -> dict[str, Any]:
    """A request as the pages show it: its view plus progress and the actions `me` may take."""
    change = change_of(view, {c["nic"]: c["state"] for c in view["confirmers"]})
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

"""What the pages show: the templates, the words for each state, and a request as a customer
sees it (its progress, and the buttons the domain's rules would accept), with the headers every
page carries.

Every page is in its reader's language: the signed-in account's (`request.state.language`, left
by `page_language.PageLanguage`), else the browser's (Accept-Language), English when we have
neither; words given to a template as `Text` (`_l`) are put in that language before it renders."""

from __future__ import annotations

import functools
from typing import Any

from contacts_shared.contracts import ContactType, RequestState
from contacts_shared.i18n import _l, from_accept_language, joined_text, localized
from contacts_shared.i18n_templates import environment
from contacts_shared.wording import role_name
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

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
    RequestState.checking: _l("Being checked"),
    RequestState.rejected: _l("Refused"),
    RequestState.validating: _l("Waiting for confirmation"),
    RequestState.declined: _l("Declined"),
    RequestState.cancelled: _l("Cancelled"),
    RequestState.expired: _l("Expired"),
    RequestState.applying: _l("Confirmed, being applied"),
    RequestState.failed: _l("Failed"),
    RequestState.done: _l("Done"),
}
STATE_HELP = {
    RequestState.checking: _l("We are checking invoices and payment methods; the validation codes are emailed next."),
    RequestState.validating: _l("Each person asked must confirm with the validation code sent to them by email."),
    RequestState.applying: _l("Everybody confirmed; the change is being applied."),
    RequestState.done: _l("The change was made."),
    RequestState.expired: _l("Nobody finished confirming in time; nothing was changed."),
}
# Messages shown after a redirect; the query names one of these, it never carries text.
NOTICES = {
    "submitted": _l("Your request was sent. The people who must confirm it receive a validation code by email."),
    "accept": _l("You accepted this request."),
    "decline": _l("You declined this request; nothing will change."),
    "resend": _l("New validation codes were sent by email; the previous ones no longer work."),
    "cancel": _l("You cancelled this request; nothing will change."),
    "signed-out": _l("You are signed out."),
    "batch-accept": _l("You accepted the requests of this batch that waited for you."),
    "batch-decline": _l("You declined the requests of this batch that waited for you; they will not change anything."),
    # The support desk's actions (support_pages).
    "support-cancel": _l("The request was cancelled; its requester and new contact are told by email, with your reason."),
    "support-resend": _l("New validation codes were sent to the confirmers who have not answered; the previous ones no longer work."),
    "support-unlock": _l("The validation code was unlocked: its holder can use it again."),
}

# The label of each contact's field.
CONTACT_LABELS = {
    ContactType.admin: _l("Administrative contact"),
    ContactType.tech: _l("Technical contact"),
    ContactType.billing: _l("Billing contact"),
}
# A confirmer's answer, as the pages say it.
ANSWER_LABELS = {
    # Translators: a confirmer's answer: none yet.
    ConfirmerState.pending: _l("pending"),
    ConfirmerState.accepted: _l("accepted"),
    ConfirmerState.declined: _l("declined"),
}


@functools.cache
def templates(language: str) -> Environment:
    """The pages' templates, written in `language` (one of `i18n.languages()`)."""
    env = environment(
        PackageLoader("contacts_requests", "templates"),
        language,
        trimmed=True,  # HTML: the whitespace in a message is not the translator's concern
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        role_names={ctype.value: role_name(ctype, language) for ctype in ContactType},
        state_labels=localized(STATE_LABELS, language),
        state_help=localized(STATE_HELP, language),
        answer_labels=localized(ANSWER_LABELS, language),
        contact_labels={ctype.value: label.translated(language) for ctype, label in CONTACT_LABELS.items()},
    )
    return env


def page_language(request: Request) -> str:
    """The language of the page: the signed-in account's, else the browser's."""
    return getattr(request.state, "language", None) or from_accept_language(request.headers.get("accept-language"))


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    language = page_language(request)
    context.setdefault("me", signed_in(request))
    context.setdefault("notice", NOTICES.get(request.query_params.get("notice", "")))
    context.setdefault("refresh", False)
    html = templates(language).get_template(template).render(
        request=request,
        csrf=csrf_for(request, csrf_seed(request)),
        dev_login=request.app.state.dev_login,
        path=request.url.path,
        **localized(context, language),
    )
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Language"] = language
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
        title=_l("Not found"),
        message=_l(
            "There is no such service or request among those you are a contact of. "
            "If a link was sent to another of your accounts, sign out and sign in as that account."
        ),
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
        parts.append(_l("accepted by %(nics)s", nics=", ".join(by_state[ConfirmerState.accepted])))
    if by_state[ConfirmerState.declined]:
        parts.append(_l("declined by %(nics)s", nics=", ".join(by_state[ConfirmerState.declined])))
    if state == RequestState.rejected:
        parts = [_l("nobody was asked to confirm")]  # refused before any validation code was sent
    elif pending := ", ".join(by_state[ConfirmerState.pending]):
        if state == RequestState.validating:
            parts.append(_l("waiting for %(nics)s", nics=pending))
        elif state == RequestState.checking:
            parts.append(_l("to be confirmed by %(nics)s", nics=pending))
        else:
            parts.append(_l("no answer from %(nics)s", nics=pending))
    return {
        **view,
        "state_enum": state,
        "progress": joined_text(parts),
        "waiting_for": by_state[ConfirmerState.pending] if state == RequestState.validating else [],
        "may_answer": change.may_answer(me),
        "may_resend": change.may_resend(me),
        "may_cancel": change.may_cancel(me),
        "is_confirmer": me in change.confirmers,
        "my_answer": change.confirmers.get(me),
    }


def rows_by_batch(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """My requests' rows: a request alone, or the requests of one batch together (one row that
    opens to them), in the order of the page."""
    rows: list[dict[str, Any]] = []
    for item in items:
        batch_id = item.get("batch_id")
        if batch_id and rows and rows[-1].get("batch_id") == batch_id:
            rows[-1]["items"].append(item)
        elif batch_id:
            rows.append({"batch_id": batch_id, "items": [item]})
        else:
            rows.append({"batch_id": None, "items": [item]})
    for row in rows:
        row["items"].sort(key=lambda item: (item["service"], item["type"]))
    return rows

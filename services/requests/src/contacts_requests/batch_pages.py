"""The pages of batches (issue 20): several services of My contacts changed in one form, and a
batch's page, where the link of the batch's email lands and one code answers every request of
the batch waiting for the reader. A second face of `batches`, as `pages` is of `handlers`."""

from __future__ import annotations

import secrets
import uuid
from urllib.parse import parse_qsl, quote

import asyncpg
from contacts_shared.contracts import ContactType, utcnow
from contacts_shared.i18n import _l
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from contacts_requests import batches, views
from contacts_requests.domain import Kind, Refusal
from contacts_requests.nic_fields import typed_changes
from contacts_requests.page_guard import read_form, signed_in_nic
from contacts_requests.page_views import describe, not_found_page, render
from contacts_requests.web import status_of

router = APIRouter(include_in_schema=False)
# The label of each field of the form.
NEW_CONTACT_LABELS = {
    ContactType.admin: _l("New administrative contact"),
    ContactType.tech: _l("New technical contact"),
    ContactType.billing: _l("New billing contact"),
}


def install_batch_pages(app: FastAPI) -> None:
    app.include_router(router)


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


# --- several services in one form ------------------------------------------------------------------


async def _form(
    request: Request, me: str, services: list[str], *, values: dict[str, str] | None = None, errors: dict[str, str] | None = None, status: int = 200
) -> Response:
    async with _pool(request).acquire() as conn:
        mine = {s["service"]: s for s in await views.my_contacts(conn, me, among=services)} if services else {}
    chosen = [mine[s] for s in dict.fromkeys(services) if s in mine]
    if not chosen:
        return render(request, "batch_new.html", status=422 if services else 200, chosen=[], fields=[], errors={"form": _l("Choose at least one of your services.")}, idempotency_key="")
    fields = [{"name": t.value, "label": NEW_CONTACT_LABELS[t], "value": (values or {}).get(t.value, "")} for t in ContactType]
    return render(
        request, "batch_new.html", status=status, chosen=chosen, fields=fields, errors=errors or {}, idempotency_key=secrets.token_urlsafe(16)
    )


@router.get("/contacts/batch")
async def batch_form(request: Request) -> Response:
    """The form for the services ticked on My contacts (`?service=…&service=…`)."""
    me = signed_in_nic(request)
    return await _form(request, me, request.query_params.getlist("service")[: batches.MAX_BATCH_ENTRIES])


@router.post("/contacts/batch")
async def submit_batch(request: Request) -> Response:
    me = signed_in_nic(request)
    form = await read_form(request)
    services = [v for k, v in parse_qsl((await request.body()).decode("utf-8", "replace")) if k == "service"][: batches.MAX_BATCH_ENTRIES]
    values = {t.value: form.get(t.value, "") for t in ContactType}
    changes, errors = typed_changes(values)
    if not errors and not changes:
        errors["form"] = _l("Nothing to change: type the NIC handle of a new contact in at least one field.")
    if errors:
        return await _form(request, me, services, values=values, errors=errors, status=422)
    async with _pool(request).acquire() as conn:
        try:
            submitted = await batches.submit_batch(
                conn,
                requester=me,
                entries=[(service, changes) for service in services],
                idempotency_key=form.get("idempotency_key") or None,
                request_ttl=request.app.state.request_ttl,
                rate_limits=request.app.state.rate_limits,
            )
        except Refusal as refusal:  # over the hourly limit
            return await _form(request, me, services, values=values, errors={"form": refusal.detail}, status=status_of(refusal))
        items = [describe(v, me) for v in await views.request_views(conn, submitted.request_ids)]
    return render(request, "batch_submitted.html", batch_id=submitted.batch_id, items=items, refused=submitted.refused)


# --- a batch's page ------------------------------------------------------------------------------------


async def _batch_page(request: Request, me: str, batch_id: str, *, token: str = "", error: str | None = None, status: int = 200) -> Response:
    try:
        bid = uuid.UUID(batch_id)
    except ValueError:
        return not_found_page(request)
    async with _pool(request).acquire() as conn:
        try:
            ids = await batches.visible_requests(conn, bid, me)
        except Refusal:
            return not_found_page(request)
        items = [describe(v, me) for v in await views.request_views(conn, ids)]
    waiting = [item for item in items if item["may_answer"]]
    return render(request, "batch.html", status=status, batch_id=str(bid), items=items, waiting=waiting, token=token, error=error)


@router.get("/batches/{batch_id}")
async def batch_page(request: Request, batch_id: str, token: str = "") -> Response:
    # The email's link lands here; it only shows the batch, with the code ready in the form.
    return await _batch_page(request, signed_in_nic(request), batch_id, token=token[:200])


@router.post("/batches/{batch_id}")
async def batch_action(request: Request, batch_id: str) -> Response:
    me = signed_in_nic(request)
    form = await read_form(request)
    action, token = form.get("action", ""), form.get("token", "").strip()[:200]
    if action not in ("accept", "decline"):
        return await _batch_page(request, me, batch_id, token=token, error=_l("Choose one of the buttons."), status=422)
    if not token:
        return await _batch_page(request, me, batch_id, error=_l("Type the validation code from your email."), status=422)
    try:
        bid = uuid.UUID(batch_id)
        await batches.answer_batch(_pool(request), batch_id=bid, nic=me, token=token, accept=action == "accept", now=utcnow())
    except ValueError:
        return not_found_page(request)
    except Refusal as refusal:
        if refusal.kind is Kind.not_found:
            return not_found_page(request)
        return await _batch_page(request, me, batch_id, token=token, error=refusal.detail, status=status_of(refusal))
    return RedirectResponse(f"/batches/{quote(str(bid))}?notice=batch-{action}", status_code=303)

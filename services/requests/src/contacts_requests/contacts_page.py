"""The page "My contacts" (`/contacts`): the services where I am a contact, a page of them at a
time in the order of their ids, filtered by a GET form (role, type, text in the id) whose values
the "Next page" and "First page" links keep."""

from __future__ import annotations

from urllib.parse import urlencode

from contacts_shared.contracts import ContactType
from fastapi import APIRouter, Request
from fastapi.responses import Response

from contacts_requests import views
from contacts_requests.domain import Refusal
from contacts_requests.page_guard import signed_in_nic
from contacts_requests.page_views import render
from contacts_requests.web import parse_service_cursor, printable, services_page

SERVICES_A_PAGE = 50

router = APIRouter(include_in_schema=False)


@router.get("/contacts")
async def my_contacts(request: Request) -> Response:
    me = signed_in_nic(request)
    query = request.query_params
    role = query.get("role", "") if query.get("role") in {t.value for t in ContactType} else ""
    filters = {"role": role, "type": printable(query.get("type", ""), 64), "q": printable(query.get("q", ""), 255)}
    try:
        after = parse_service_cursor(query["cursor"]) if query.get("cursor") else None
    except Refusal:
        after = None  # a mangled link starts again from the first page
    async with request.app.state.pool.acquire() as conn:
        found = await views.my_contacts(
            conn, me, role=role or None, type_=filters["type"] or None, text=filters["q"] or None, after=after, limit=SERVICES_A_PAGE + 1
        )
        types = await views.service_types_of(conn, me)
    services, next_cursor = services_page(found, SERVICES_A_PAGE)
    kept = {name: value for name, value in filters.items() if value}
    return render(
        request,
        "contacts.html",
        services=services,
        filters=filters,
        types=types,
        next_page=f"/contacts?{urlencode({**kept, 'cursor': next_cursor})}" if next_cursor else None,
        first_page=f"/contacts?{urlencode(kept)}" if after else None,
    )

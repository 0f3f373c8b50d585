"""What the JSON API and the pages share: who is asking, the domain's refusals as HTTP
statuses, problem details (RFC 9457), and the paging cursors of "my requests" and "my contacts"."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import pydantic_core
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from contacts_requests import views
from contacts_requests.api_docs import PROBLEM
from contacts_requests.domain import Kind, Refusal

# The HTTP status of each kind of refusal.
STATUS = {
    Kind.not_found: 404,
    Kind.forbidden: 403,
    Kind.conflict: 409,
    Kind.invalid: 422,
    Kind.too_many: 429,
}

# Methods that change nothing: the only ones the API serves to a session cookie alone.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def status_of(refusal: Refusal) -> int:
    return STATUS[refusal.kind]


def json_response(content: Any, status_code: int = 200) -> Response:
    """An answer of plain data (dicts and lists of strings, numbers, UUIDs, datetimes in RFC 3339)
    encoded in one pass by pydantic's serialiser: FastAPI's `jsonable_encoder` walked a request's
    view twice, 0.25 ms a view against 0.007 (bench/README.md)."""
    return Response(pydantic_core.to_json(content), status_code=status_code, media_type="application/json")


def problem(status: int, title: str, detail: str, *, field: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if field:
        body["errors"] = [{"field": field, "message": detail}]
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="contacts"'} if status == 401 else {}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra["retry_after"])
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class NotSignedIn(Exception):
    def __init__(self, detail: str = "Sign in again: a valid identity token is required.") -> None:
        super().__init__(detail)
        self.detail = detail


def current_nic(request: Request) -> str:
    """The caller's NIC, as the Identity step found it."""
    nic = getattr(request.state, "nic", None)
    if nic is None:
        raise NotSignedIn
    return nic


def cursor_after(created_at: datetime, request_id: uuid.UUID) -> str:
    """Where the next page of "my requests" starts: after this request."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{request_id}".encode()).decode()


def parse_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, rid = base64.urlsafe_b64decode(text.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(rid)
    except ValueError:
        raise Refusal(Kind.invalid, "Invalid cursor", "The cursor is not one this API gave out.", field="cursor") from None


def printable(text: str, limit: int) -> str:
    """What a page keeps of a text typed in a filter: trimmed, no control character (PostgreSQL
    takes no NUL), at most `limit` characters."""
    return "".join(c for c in text if c >= " " and c != "\x7f").strip()[:limit]


def cursor_after_service(service: str) -> str:
    """Where the next page of "my contacts" starts: after this service (in the order of ids)."""
    return base64.urlsafe_b64encode(f"service|{service}".encode()).decode()


def parse_service_cursor(text: str) -> str:
    try:
        kind, _, service = base64.urlsafe_b64decode(text.encode()).decode().partition("|")
    except ValueError:
        kind, service = "", ""
    # A service id holds no control character (contracts.ServiceId), and PostgreSQL takes no NUL.
    if kind != "service" or not service or any(c < " " or c == "\x7f" for c in service):
        raise Refusal(Kind.invalid, "Invalid cursor", "The cursor is not one this API gave out.", field="cursor")
    return service


def services_page(services: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """The first `limit` of `services` (looked up one more than shown), and the cursor of the next
    page when there is one."""
    more = len(services) > limit
    return services[:limit], cursor_after_service(services[limit - 1]["service"]) if more else None


async def page_of(
    conn: asyncpg.Connection, ids: list[uuid.UUID], limit: int, *, for_support: bool = False
) -> tuple[list[dict[str, Any]], str | None]:
    """The views of the first `limit` of `ids` (looked up one more than shown), and the cursor of
    the next page when there is one."""
    items = await views.request_views(conn, ids[:limit], for_support=for_support)  # one statement for the page
    more = len(ids) > limit and items
    return items, cursor_after(items[-1]["created_at"], uuid.UUID(items[-1]["id"])) if more else None

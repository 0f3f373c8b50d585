"""The support desk's API (`/v1/support/...`): what support agents look up and do, through
`support_desk`. Only callers whose token holds the role `support` reach it; anyone else signed
in is answered 404, as for a route that does not exist (`SupportOnly`, before any body is read).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from contacts_shared.contracts import Nic, RequestState
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from contacts_requests import support_desk, support_docs
from contacts_requests.api_access import Agent, Pool
from contacts_requests.domain import MAX_REASON_CHARS, not_found
from contacts_requests.web import (
    json_response,
    page_of,
    parse_cursor,
    problem,
    status_of,
)

PREFIX = "/v1/support/"

router = APIRouter(prefix="/v1/support", tags=["support"])

Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=200)]


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=MAX_REASON_CHARS, description="Why: written in the request's history, told to its parties on a cancel, announced on the bus"
    )


class SupportOnly:
    """ASGI middleware, after `identity.Identity`: a signed-in caller who is not a support agent
    gets 404 on every `/v1/support/` path (one not signed in gets the routes' own 401)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        state = scope.get("state") or {}
        if scope["type"] == "http" and scope["path"].startswith(PREFIX) and state.get("nic") and not state.get("agent"):
            refusal = not_found()
            await problem(status_of(refusal), refusal.title, refusal.detail)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@router.get("/services/{service:path}", summary="A service's contacts and requests", response_model=None, responses=support_docs.SERVICE)
async def support_service(service: str, agent: Agent, db: Pool, limit: Limit = 50, cursor: Cursor = None) -> Response:
    before = parse_cursor(cursor) if cursor else None
    async with db.acquire() as conn:
        found = await support_desk.service_file(conn, service, limit=limit + 1, before=before)
        items, next_cursor = await page_of(conn, found["ids"], limit, for_support=True)
    return json_response({"service": found["service"], "items": items, "next_cursor": next_cursor})


@router.get(
    "/accounts/{nic}/contact-changes", summary="An account and the requests it is party to", response_model=None, responses=support_docs.ACCOUNT
)
async def support_account(
    nic: Nic, agent: Agent, db: Pool, state: RequestState | None = None, limit: Limit = 50, cursor: Cursor = None
) -> Response:
    before = parse_cursor(cursor) if cursor else None
    async with db.acquire() as conn:
        found = await support_desk.account_file(conn, nic, state=state, limit=limit + 1, before=before)
        items, next_cursor = await page_of(conn, found["ids"], limit, for_support=True)
    return json_response({"account": found["account"], "items": items, "next_cursor": next_cursor})


@router.get("/contact-changes/{request_id}", summary="Any request, with its history", response_model=None, responses=support_docs.ONE)
async def support_request(request_id: uuid.UUID, agent: Agent, db: Pool) -> Response:
    async with db.acquire() as conn:
        return json_response(await support_desk.request_file(conn, request_id))


@router.post("/contact-changes/{request_id}/cancel", summary="Cancel an open request, for a reason", response_model=None, responses=support_docs.CANCEL)
async def support_cancel(request_id: uuid.UUID, body: ReasonBody, agent: Agent, db: Pool) -> Response:
    async with db.acquire() as conn:
        await support_desk.cancel(conn, request_id=request_id, agent=agent, reason=body.reason)
        return json_response(await support_desk.request_file(conn, request_id))


@router.post(
    "/contact-changes/{request_id}/confirmers/{nic}/unlock",
    summary="Unlock a confirmer's code locked after too many wrong tries",
    response_model=None,
    responses=support_docs.UNLOCK,
)
async def support_unlock(request_id: uuid.UUID, nic: Nic, body: ReasonBody, agent: Agent, db: Pool) -> Response:
    async with db.acquire() as conn:
        await support_desk.unlock(conn, request_id=request_id, agent=agent, nic=nic, reason=body.reason)
        return json_response(await support_desk.request_file(conn, request_id))


@router.post(
    "/contact-changes/{request_id}/resend", status_code=202, summary="Send new codes to the confirmers who have not answered", responses=support_docs.RESEND
)
async def support_resend(request_id: uuid.UUID, body: ReasonBody, agent: Agent, db: Pool) -> Response:
    async with db.acquire() as conn:
        await support_desk.resend(conn, request_id=request_id, agent=agent, reason=body.reason)
        return json_response(await support_desk.request_file(conn, request_id), 202)

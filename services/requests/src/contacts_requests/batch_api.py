"""Batches through the API (`/v1/contact-change-batches`): submit several services at once,
look a batch up, accept or decline its requests with the batch's code (`batches`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from contacts_shared.contracts import utcnow
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from contacts_requests import batch_docs, batches, views
from contacts_requests.api_access import Me, Pool
from contacts_requests.api_bodies import BatchBody, TokenBody
from contacts_requests.web import json_response, status_of

router = APIRouter(prefix="/v1/contact-change-batches", tags=["contact changes"])


@router.post("", status_code=202, summary="Ask for contact changes on several services at once", responses=batch_docs.SUBMIT)
async def submit_batch(
    request: Request,
    body: BatchBody,
    me: Me,
    db: Pool,
    idempotency_key: Annotated[str | None, Header(max_length=200, description="Sent again with a batch, returns the same answer")] = None,
) -> Response:
    async with db.acquire() as conn:
        submitted = await batches.submit_batch(
            conn,
            requester=me,
            entries=[(entry.service, entry.changes()) for entry in body.changes],
            idempotency_key=idempotency_key,
            request_ttl=request.app.state.request_ttl,
            rate_limits=request.app.state.rate_limits,
        )
        items = await views.request_views(conn, submitted.request_ids)
    refused = [
        {
            "service": r.service,
            "type": r.type.value,
            "problem": {
                "type": "about:blank",
                "title": r.refusal.title,
                "status": status_of(r.refusal),
                "detail": r.refusal.detail,
                **({"errors": [{"field": r.refusal.field, "message": r.refusal.detail}]} if r.refusal.field else {}),
                **r.refusal.extra,
            },
        }
        for r in submitted.refused
    ]
    return json_response({"batch_id": submitted.batch_id, "items": items, "refused": refused}, 202)


async def _batch_view(conn: Any, batch_id: uuid.UUID, me: str) -> dict[str, Any]:
    items = await views.request_views(conn, await batches.visible_requests(conn, batch_id, me))
    return {"batch_id": batch_id, "requester": items[0]["requester"], "items": items}


@router.get("/{batch_id}", summary="One batch: its requests I am party to", response_model=None, responses=batch_docs.ONE)
async def one_batch(batch_id: uuid.UUID, me: Me, db: Pool) -> Response:
    async with db.acquire() as conn:
        return json_response(await _batch_view(conn, batch_id, me))


def _answering(accept: bool) -> Callable[..., Awaitable[Response]]:
    async def answer(batch_id: uuid.UUID, body: TokenBody, me: Me, db: Pool) -> Response:
        await batches.answer_batch(db, batch_id=batch_id, nic=me, token=body.token, accept=accept, now=utcnow())
        async with db.acquire() as conn:
            return json_response(await _batch_view(conn, batch_id, me))

    return answer


for _action, _accept, _responses in (("accept", True, batch_docs.ACCEPT), ("decline", False, batch_docs.DECLINE)):
    router.post(
        f"/{{batch_id}}/{_action}", name=f"{_action}_batch", summary=f"{_action.capitalize()} every request of the batch waiting for me, with the batch's code", response_model=None, responses=_responses
    )(_answering(_accept))

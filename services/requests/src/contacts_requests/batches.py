"""Use cases of batches (issue 20): one submission naming several services, each judged by the
same rules as a submission of its own (one request per service and type, all grouped in the
batch), a refusal of one not blocking the others; and one code per confirmer answering every
request of the batch that waits for them, each request still ending on its own."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog
from contacts_shared.contracts import ContactType, utcnow
from contacts_shared.i18n import _l

from contacts_requests import batch_store, handlers, store, submissions
from contacts_requests.contact_change import ContactChange
from contacts_requests.domain import Kind, Refusal, may_view, not_found, plan_submission
from contacts_requests.rate_limits import HOUR, RateLimits, check_submission
from contacts_requests.unit_of_work import UnitOfWork

log = structlog.get_logger("contacts.requests")

# The most services one batch may name.
MAX_BATCH_ENTRIES = 100
# A batch's requests answered side by side (each in its own transaction, on its own connection).
ANSWERS_AT_ONCE = 4


@dataclass(frozen=True)
class Refused:
    """A change of a batch the rules refused: the service, the contact type, and why."""

    service: str
    type: ContactType
    refusal: Refusal


@dataclass(frozen=True)
class BatchSubmitted:
    batch_id: uuid.UUID | None  # None when every change was refused: no batch was made
    request_ids: list[uuid.UUID]
    refused: list[Refused]
    replayed: bool = False  # the idempotency key made it before: nothing new was created


async def submit_batch(
    conn: asyncpg.Connection,
    *,
    requester: str,
    entries: list[tuple[str, dict[ContactType, str]]],
    idempotency_key: str | None,
    request_ttl: timedelta,
    rate_limits: RateLimits | None = None,
) -> BatchSubmitted:
    """One request per service and type named in `entries`, all in one new batch, each judged
    on its own; what was refused is said, not raised. The same idempotency key answers the same.
    A batch counts as one submission against the hourly limit."""
    async with UnitOfWork(conn) as uow:
        if idempotency_key and (earlier := await _earlier(conn, requester, idempotency_key)) is not None:
            return earlier
        now = utcnow()
        if rate_limits is not None:
            check_submission(rate_limits, recent=await submissions.recent_submissions(conn, requester, now - HOUR), now=now)
        batch_id, expires_at = uuid.uuid4(), now + request_ttl
        created: list[uuid.UUID] = []
        refused: list[Refused] = []
        for service_id, changes in entries:
            context = await store.submission_context(conn, service_id, [requester, *changes.values()])
            try:
                async with uow.savepoint():
                    try:
                        plans = plan_submission(requester, context.service, changes, context.accounts, context.open_requests)
                        created += await handlers.create_requests(
                            uow, service_id, plans, context.accounts, requester, expires_at, idempotency_key=idempotency_key, batch_id=batch_id
                        )
                    except asyncpg.UniqueViolationError:
                        await handlers.refuse_lost_race(conn, requester, service_id, changes, context)
                        raise
            except Refusal as refusal:
                refused += [Refused(service_id, ctype, refusal) for ctype in changes]
        if not created:
            return BatchSubmitted(None, [], refused)
        await batch_store.insert_batch(conn, batch_id, requester)
        if idempotency_key:
            await submissions.record_batch(conn, requester, idempotency_key, batch_id, created, [_refused_json(r) for r in refused])
    log.info("batch submitted", batch_id=str(batch_id), requester=requester, requests=len(created), refused=len(refused))
    return BatchSubmitted(batch_id, created, refused)


def _refused_json(refused: Refused) -> dict[str, Any]:
    r = refused.refusal
    return {"service": refused.service, "type": refused.type.value, "kind": r.kind.value, "title": r.title, "detail": r.detail, "field": r.field, "extra": r.extra}


async def _earlier(conn: asyncpg.Connection, requester: str, key: str) -> BatchSubmitted | None:
    row = await submissions.batch_by_key(conn, requester, key)
    if row is None:
        return None
    refused = [
        Refused(r["service"], ContactType(r["type"]), Refusal(Kind(r["kind"]), r["title"], r["detail"], r["field"], r["extra"]))
        for r in json.loads(row["refused"] or "[]")
    ]
    return BatchSubmitted(row["batch_id"], list(row["request_ids"]), refused, replayed=True)


async def visible_requests(conn: asyncpg.Connection, batch_id: uuid.UUID, nic: str) -> list[uuid.UUID]:
    """The requests of the batch `nic` is party to; not found when none (or no such batch)."""
    return [uuid.UUID(change.id) for change in await _visible_changes(conn, batch_id, nic)]


async def _visible_changes(conn: asyncpg.Connection, batch_id: uuid.UUID, nic: str) -> list[ContactChange]:
    changes = [c for c in await batch_store.requests_of_batch(conn, batch_id) if may_view(nic, c.requester, c.from_, c.to)]
    if not changes:
        raise not_found()
    return changes


async def answer_batch(
    pool: asyncpg.Pool, *, batch_id: uuid.UUID, nic: str, token: str, accept: bool, now: datetime
) -> list[uuid.UUID]:
    """Accept or decline, with the batch's code, every request of the batch that waits for `nic`;
    each request is answered (and ends) on its own. The ids answered; refused as an invalid code
    when it answered none (a wrong code counts against each request tried), as a conflict when
    nothing waits for `nic` any more."""
    async with pool.acquire() as conn:
        waiting = [uuid.UUID(c.id) for c in await _visible_changes(conn, batch_id, nic) if c.may_answer(nic)]
    if not waiting:
        raise Refusal(Kind.conflict, "Nothing to answer", _l("No request of this batch waits for your answer any more."))
    answered: list[uuid.UUID] = []
    refusals: list[Refusal] = []
    at_once = asyncio.Semaphore(ANSWERS_AT_ONCE)

    async def answer_one(request_id: uuid.UUID) -> None:
        async with at_once:
            try:
                await handlers.answer(pool, request_id=request_id, nic=nic, token=token, accept=accept, now=now)
                answered.append(request_id)
            except Refusal as refused:  # this request moved on meanwhile, or the code is not its own
                refusals.append(refused)

    await asyncio.gather(*(answer_one(request_id) for request_id in waiting))
    if not answered and refusals:
        raise refusals[0]
    log.info("batch answered", batch_id=str(batch_id), nic=nic, accepted=accept, requests=len(answered))
    return answered

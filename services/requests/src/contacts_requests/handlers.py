"""Use cases of the requests service: what people do (through the API and the pages) and what
its timers do, each through the domain rules, the store and the outbox. The messages it consumes
are in `consumers`.

Each use case is one transaction: the state change, its history line and the messages that
announce it commit together or not at all.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import asyncpg
import structlog
from contacts_shared.contracts import (
    ContactChangeRequested,
    ContactType,
    Phase,
    RequestState,
    utcnow,
)
from contacts_shared.outbox import enqueue

from contacts_requests import replicas, store, submissions
from contacts_requests.announcements import (
    about,
    announce,
    transition,
    validation_request,
)
from contacts_requests.domain import (
    ConfirmerState,
    ContactChange,
    Kind,
    Refusal,
    Transition,
    invalid_token,
    may_view,
    not_found,
    plan_submission,
)
from contacts_requests.rate_limits import (
    HOUR,
    RateLimits,
    check_resend,
    check_submission,
)
from contacts_requests.tokens import check_token

log = structlog.get_logger("contacts.requests")


# --- submitting -----------------------------------------------------------------------------------


async def submit(
    conn: asyncpg.Connection,
    *,
    requester: str,
    service_id: str,
    changes: dict[ContactType, str],
    idempotency_key: str | None,
    request_ttl: timedelta,
    rate_limits: RateLimits | None = None,
) -> list[uuid.UUID]:
    """Create one request per type (all or nothing); the same idempotency key returns the same ids.
    With `rate_limits` (a person through the API or the pages, not another system's message),
    a requester over the hourly limit is refused."""

    async def earlier_submission() -> list[uuid.UUID] | None:
        return await submissions.submission_by_key(conn, requester, idempotency_key) if idempotency_key else None

    if (existing := await earlier_submission()) is not None:
        return existing
    if rate_limits is not None:
        now = utcnow()
        recent = await submissions.recent_submissions(conn, requester, now - HOUR)
        check_submission(rate_limits, recent=recent, now=now)
    context = await store.submission_context(conn, service_id, [requester, *changes.values()])
    try:
        plans = plan_submission(requester, context.service, changes, context.accounts, context.open_requests)
    except Refusal:
        # The request found open may be this very submission, delivered twice and committed by
        # a concurrent handler since the key was looked up.
        if (existing := await earlier_submission()) is not None:
            return existing
        raise

    expires_at = utcnow() + request_ttl
    ids: list[uuid.UUID] = []
    try:
        async with conn.transaction():  # savepoint: a lost race leaves nothing behind
            for plan in plans:
                request_id = uuid.uuid4()
                await store.insert_request(
                    conn,
                    request_id=request_id,
                    service=service_id,
                    ctype=plan.type,
                    from_=plan.from_,
                    to=plan.to,
                    requester=requester,
                    confirmers=plan.confirmers,
                    expires_at=expires_at,
                )
                change = ContactChange(
                    id=str(request_id),
                    service=service_id,
                    type=plan.type,
                    from_=plan.from_,
                    to=plan.to,
                    requester=requester,
                    state=RequestState.checking,
                    confirmers=dict.fromkeys(plan.confirmers, ConfirmerState.pending),
                    expires_at=expires_at,
                )
                vet = ContactChangeRequested(**about(change), phase=Phase.submit)
                await announce(
                    conn,
                    change,
                    Transition(RequestState.checking, requester, "submitted"),
                    accounts=context.accounts,  # the requester's, the new and the current contacts'
                    after=(vet,),
                    idempotency_key=idempotency_key,
                )
                ids.append(request_id)
            if idempotency_key and not await submissions.record_submission(conn, requester, idempotency_key, ids):
                raise _DuplicateSubmission
    except _DuplicateSubmission:
        return await submissions.submission_by_key(conn, requester, idempotency_key or "") or []
    except asyncpg.UniqueViolationError:
        # Another submission for the same service and type won the race. If it was this same
        # submission delivered twice (same idempotency key, handled concurrently), it is ours.
        if (existing := await earlier_submission()) is not None:
            return existing
        open_requests = await store.open_requests_for(conn, service_id)
        plan_submission(requester, context.service, changes, context.accounts, open_requests)
        raise
    for request_id in ids:
        log.info("request submitted", request_id=str(request_id), service=service_id, requester=requester)
    return ids


class _DuplicateSubmission(Exception):
    pass


# --- confirmers' actions ---------------------------------------------------------------------------


async def _load_visible(conn: asyncpg.Connection, request_id: uuid.UUID, nic: str) -> ContactChange:
    return _visible(await store.load_change(conn, request_id, for_update=True), nic)


def _visible(change: ContactChange | None, nic: str) -> ContactChange:
    """The request if `nic` is party to it; refused as not found otherwise, as one that does not exist."""
    if change is None or not may_view(nic, change.requester, change.from_, change.to):
        raise not_found()
    return change


# How long an answer waits for its token's hash. The notifier announces a token before its email
# leaves, so the hash is normally here first; the broker may still deliver it a moment later.
TOKEN_HASH_WAIT_SECONDS = 3.0


async def answer(
    pool: asyncpg.Pool, *, request_id: uuid.UUID, nic: str, token: str, accept: bool, now: datetime
) -> None:
    """Accept or decline with a token. A wrong token is counted even though the call fails."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TOKEN_HASH_WAIT_SECONDS
    while (token_ok := await _answer_once(pool, request_id, nic, token, accept, now, wait=loop.time() < deadline)) is None:
        await asyncio.sleep(0.02)
    if not token_ok:
        log.info("token refused", request_id=str(request_id), nic=nic)
        raise invalid_token()


async def _answer_once(
    pool: asyncpg.Pool, request_id: uuid.UUID, nic: str, token: str, accept: bool, now: datetime, *, wait: bool
) -> bool | None:
    """One try: whether the token was right (and the answer recorded), or None when `wait` and
    the confirmer's token hash has not arrived yet (then nothing was written)."""
    async with pool.acquire() as conn, conn.transaction():
        loaded = await store.load(conn, request_id, for_update=True)
        if loaded is None:
            raise not_found()
        change = _visible(loaded.change, nic)
        slot = loaded.slots.get(nic)
        change.check_answerable(nic)
        if wait and (slot is None or slot.token_hash is None):
            # A confirmer quick enough to answer before the hash of the token just mailed to
            # them got here must not see a good token refused.
            return None
        if not (slot is not None and check_token(slot, token, now)):
            await store.count_token_failure(conn, request_id, nic)
            return False
        updated, t = change.answer(nic, accept)
        await store.record_answer(
            conn, request_id, nic, updated.confirmers[nic], change.state, f"{'accepted' if accept else 'declined'} by {nic}"
        )
        if t is not None:
            apply = (ContactChangeRequested(**about(change), phase=Phase.apply),) if t.state == RequestState.applying else ()
            await transition(conn, change, t, accounts=loaded.accounts, after=apply)
        return True


async def resend(conn: asyncpg.Connection, *, request_id: uuid.UUID, nic: str, rate_limits: RateLimits) -> list[str]:
    change = await _load_visible(conn, request_id, nic)
    pending = change.check_resend(nic)
    record = await submissions.resend_record(conn, request_id)
    now = utcnow()
    assert change.expires_at is not None
    check_resend(rate_limits, resends=record["resends"], last_resend_at=record["last_resend_at"], expires_at=change.expires_at, now=now)
    await submissions.count_resend(conn, request_id, now)
    generations = await store.new_round_of_codes(conn, request_id, pending)
    asked = validation_request(change, pending, await replicas.accounts_by_nic(conn, pending), generations)
    if isinstance(asked, str):
        raise Refusal(Kind.conflict, "Cannot resend", f"The validation codes cannot be sent: {asked}.")
    await enqueue(conn, asked)
    await store.record_history(conn, request_id, change.state, nic, f"validation codes sent again to {', '.join(pending)}")
    return pending


async def cancel(conn: asyncpg.Connection, *, request_id: uuid.UUID, nic: str) -> None:
    change = await _load_visible(conn, request_id, nic)
    await transition(conn, change, change.cancel(nic))


async def expire_overdue(pool: asyncpg.Pool) -> int:
    """End every open request whose time ran out (the domain says how), with its emails."""
    async with pool.acquire() as conn, conn.transaction():
        ids = await store.expired_request_ids(conn)
        for request_id in ids:
            change = await store.load_change(conn, request_id)
            assert change is not None
            if (t := change.time_is_up()) is not None:
                await transition(conn, change, t)
        return len(ids)


async def ask_vetting_again(pool: asyncpg.Pool, waited: timedelta) -> int:
    """Ask the billing check again about requests whose verdict has not come for `waited` (its
    message may have been dead-lettered during an outage); a verdict that comes twice is taken
    once, the second finds the request moved on."""
    async with pool.acquire() as conn, conn.transaction():
        ids = await store.unvetted_request_ids(conn, waited)
        for request_id in ids:
            change = await store.load_change(conn, request_id)
            assert change is not None
            if (phase := change.awaited_vetting()) is not None:
                await enqueue(conn, ContactChangeRequested(**about(change), phase=phase))
                await store.mark_vetting_asked(conn, request_id, change.state)
                log.warning("billing check asked again", request_id=change.id, phase=phase.value)
        return len(ids)



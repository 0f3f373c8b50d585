"""Use cases of the requests service: what people do (through the API and the pages) and what
its timers do. Each is: load, ask the domain, save what it decided through one unit of work
(the state change, its history line and the messages that announce it commit together or not
at all). The messages it consumes are in `consumers`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg
import structlog
from contacts_shared.contracts import ContactType, utcnow

from contacts_requests import store, submissions
from contacts_requests.contact_change import ContactChange, Decision
from contacts_requests.domain import (
    Account,
    PlannedChange,
    Refusal,
    ReminderSchedule,
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
from contacts_requests.store import LoadedChange
from contacts_requests.tokens import check_token
from contacts_requests.unit_of_work import UnitOfWork

log = structlog.get_logger("contacts.requests")
T = TypeVar("T")


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

    async with UnitOfWork(conn) as uow:
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

        ids: list[uuid.UUID] = []
        try:
            async with uow.savepoint():  # a lost race leaves nothing behind
                ids = await create_requests(
                    uow, service_id, plans, context.accounts, requester, utcnow() + request_ttl, idempotency_key=idempotency_key
                )
                if idempotency_key and not await submissions.record_submission(conn, requester, idempotency_key, ids):
                    raise _DuplicateSubmission
        except _DuplicateSubmission:
            return await submissions.submission_by_key(conn, requester, idempotency_key or "") or []
        except asyncpg.UniqueViolationError:
            # Another submission for the same service and type won the race. If it was this same
            # submission delivered twice (same idempotency key, handled concurrently), it is ours.
            if (existing := await earlier_submission()) is not None:
                return existing
            await refuse_lost_race(conn, requester, service_id, changes, context)
            raise
    for request_id in ids:
        log.info("request submitted", request_id=str(request_id), service=service_id, requester=requester)
    return ids


class _DuplicateSubmission(Exception):
    pass


async def create_requests(
    uow: UnitOfWork,
    service_id: str,
    plans: list[PlannedChange],
    accounts: Mapping[str, Account],
    requester: str,
    expires_at: datetime,
    *,
    idempotency_key: str | None = None,
    batch_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """The requests the rules planned, recorded (one per type); their ids. `accounts`: the
    requester's, the new and the current contacts'."""
    ids = []
    for plan in plans:
        decision = ContactChange.submitted(str(uuid.uuid4()), service_id, plan, requester, expires_at, str(batch_id) if batch_id else None)
        await uow.record(decision, accounts, idempotency_key=idempotency_key)
        ids.append(uuid.UUID(decision.change.id))
    return ids


async def refuse_lost_race(
    conn: asyncpg.Connection, requester: str, service_id: str, changes: dict[ContactType, str], context: store.SubmissionContext
) -> None:
    """A request for the same service and type was opened concurrently: the rules, asked again,
    refuse with the request now open."""
    open_requests = await store.open_requests_for(conn, service_id)
    plan_submission(requester, context.service, changes, context.accounts, open_requests)


# --- confirmers' actions ---------------------------------------------------------------------------


async def _load_visible(uow: UnitOfWork, request_id: uuid.UUID, nic: str) -> LoadedChange:
    """The request, locked, if `nic` is party to it; refused as not found otherwise, as one that
    does not exist."""
    loaded = await uow.load(request_id, for_update=True)
    if loaded is None or not may_view(nic, loaded.change.requester, loaded.change.from_, loaded.change.to):
        raise not_found()
    return loaded


# How long an answer waits for its token's hash. The notifier announces a token before its email
# leaves, so the hash is normally here first; the broker may still deliver it a moment later.
TOKEN_HASH_WAIT_SECONDS = 3.0


async def answer(
    pool: asyncpg.Pool,
    *,
    request_id: uuid.UUID,
    nic: str,
    token: str,
    accept: bool,
    now: datetime,
    then: Callable[[asyncpg.Connection], Awaitable[T]] | None = None,
) -> T | None:
    """Accept or decline with a token. A wrong token is counted even though the call fails.
    `then` reads what the caller answers with, in the answer's own transaction (one commit
    where a read after it took another)."""

    async def once(*, wait: bool) -> tuple[bool, T | None] | None:
        """One try: whether the token was right (and the answer recorded, and `then` read), or
        None when `wait` and the confirmer's token hash has not arrived yet (nothing written)."""
        async with pool.acquire() as conn, UnitOfWork(conn) as uow:
            loaded = await _load_visible(uow, request_id, nic)
            change, slot = loaded.change, loaded.slots.get(nic)
            change.check_answerable(nic)
            if wait and (slot is None or slot.token_hash is None):
                # A confirmer quick enough to answer before the hash of the token just mailed
                # to them got here must not see a good token refused.
                return None
            if not (slot is not None and check_token(slot, token, now)):
                await uow.record(change.code_refused(nic), loaded.accounts)
                return False, None
            await uow.record(change.answer(nic, accept), loaded.accounts)
            return True, (await then(conn) if then is not None else None)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + TOKEN_HASH_WAIT_SECONDS
    while (outcome := await once(wait=loop.time() < deadline)) is None:
        await asyncio.sleep(0.02)
    token_ok, read = outcome
    if not token_ok:
        log.info("token refused", request_id=str(request_id), nic=nic)
        raise invalid_token()
    return read


async def resend(conn: asyncpg.Connection, *, request_id: uuid.UUID, nic: str, rate_limits: RateLimits) -> list[str]:
    async with UnitOfWork(conn) as uow:
        loaded = await _load_visible(uow, request_id, nic)
        change = loaded.change
        pending = change.check_resend(nic)
        decision = change.resend(nic, loaded.accounts)
        record = await submissions.resend_record(conn, request_id)
        now = utcnow()
        assert change.expires_at is not None
        check_resend(rate_limits, resends=record["resends"], last_resend_at=record["last_resend_at"], expires_at=change.expires_at, now=now)
        await submissions.count_resend(conn, request_id, now)
        await uow.record(decision, loaded.accounts)
    return pending


async def cancel(conn: asyncpg.Connection, *, request_id: uuid.UUID, nic: str) -> None:
    async with UnitOfWork(conn) as uow:
        loaded = await _load_visible(uow, request_id, nic)
        await uow.record(loaded.change.cancel(nic), loaded.accounts)


async def expire_overdue(pool: asyncpg.Pool) -> int:
    """End every open request whose time ran out (the domain says how), with its emails."""
    return await _decide_each(pool, store.expired_request_ids, lambda change, _: change.time_is_up())


async def remind_due(pool: asyncpg.Pool, schedule: ReminderSchedule) -> int:
    """Remind the confirmers of every request whose next reminder is due (the domain says who)."""
    return await _decide_each(pool, store.reminder_due_ids, lambda change, accounts: change.remind(utcnow(), schedule, accounts))


async def ask_vetting_again(pool: asyncpg.Pool, waited: timedelta) -> int:
    """Ask the billing check again about requests whose verdict has not come for `waited` (its
    message may have been dead-lettered during an outage); a verdict that comes twice is taken
    once, the second finds the request moved on."""
    return await _decide_each(pool, lambda conn: store.unvetted_request_ids(conn, waited), lambda change, _: change.ask_vetting_again())


async def _decide_each(
    pool: asyncpg.Pool,
    find: Callable[[asyncpg.Connection], Awaitable[list[uuid.UUID]]],
    decide: Callable[[ContactChange, Mapping[str, Account]], Decision | None],
) -> int:
    """A timer's pass: the requests `find` returns (locked), each decided on (knowing its
    parties' accounts) in one unit of work."""
    async with pool.acquire() as conn, UnitOfWork(conn) as uow:
        ids = await find(conn)
        for request_id in ids:
            loaded = await uow.load(request_id, confirmer_states=False)
            assert loaded is not None
            if (decision := decide(loaded.change, loaded.accounts)) is not None:
                await uow.record(decision, loaded.accounts)
        return len(ids)

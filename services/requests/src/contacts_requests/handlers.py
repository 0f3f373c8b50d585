"""Use cases of the requests service: messages and HTTP calls in, domain rules, store, outbox.

Each use case is one transaction: the state change, its history line and the messages that
announce it commit together or not at all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog
from contacts_shared.consumer import ClaimsItself, Handler
from contacts_shared.contracts import (
    AccountDeleted,
    AccountUpserted,
    Confirmer,
    ContactChangeCompleted,
    ContactChangeEmailFailed,
    ContactChangeRequested,
    ContactChangeStateChanged,
    ContactChangeSubmit,
    ContactChangeTokenIssued,
    ContactChangeValidationRequested,
    ContactChangeVetted,
    ContactType,
    Contract,
    Envelope,
    Party,
    Phase,
    RequestState,
    ServiceDeleted,
    ServiceUpserted,
    utcnow,
)
from contacts_shared.crashpoints import crash_point
from contacts_shared.outbox import enqueue

from contacts_requests import replicas, store
from contacts_requests.domain import (
    Account,
    ConfirmerState,
    ContactChange,
    Kind,
    Refusal,
    Transition,
    check_token,
    invalid_token,
    may_view,
    not_found,
    plan_submission,
    unreachable,
)
from contacts_requests.rate_limits import (
    HOUR,
    RateLimits,
    check_resend,
    check_submission,
)

log = structlog.get_logger("contacts.requests")


# --- announcing transitions ---------------------------------------------------------------------


async def _transition(conn: asyncpg.Connection, change: ContactChange, t: Transition, **announced: Any) -> None:
    """Record a transition and announce it (`_announce`'s keyword arguments)."""
    await store.set_state(conn, uuid.UUID(change.id), t.state, t.actor, t.reason)
    await _announce(conn, change, t, **announced)


def _about(change: ContactChange) -> dict[str, Any]:
    """The fields every message about a request starts with."""
    return {
        "request_id": uuid.UUID(change.id),
        "service": change.service,
        "type": change.type,
        "from_": change.from_,
        "to": change.to,
    }


def _parties(accounts: Mapping[str, Account], requester: str, from_: str, to: str) -> list[Party]:
    return [
        Party(nic=nic, email=accounts[nic].email, role=role)
        for role, nic in (("requester", requester), ("from", from_), ("to", to))
        if nic in accounts
    ]


async def _announce(
    conn: asyncpg.Connection,
    change: ContactChange,
    t: Transition,
    *,
    accounts: Mapping[str, Account] | None = None,
    before: Sequence[Contract] = (),
    after: Sequence[Contract] = (),
    idempotency_key: str | None = None,
) -> None:
    """Tell the notifier and other systems the request's new state, with its parties' emails
    (from `accounts` when the caller has them). The messages that go with it (`before` and
    `after` it) are queued in the same statement."""
    if accounts is None:
        accounts = await replicas.accounts_by_nic(conn, [change.requester, change.from_, change.to])
    state_changed = _state_changed(change, t.state, t.reason, accounts, idempotency_key)
    await enqueue(conn, *before, state_changed, *after)
    log.info("request state changed", request_id=change.id, state=t.state.value, actor=t.actor)


def _state_changed(
    change: ContactChange,
    state: RequestState,
    reason: str | None,
    accounts: Mapping[str, Account],
    idempotency_key: str | None = None,
) -> ContactChangeStateChanged:
    return ContactChangeStateChanged(
        **_about(change),
        state=state,
        reason=reason,
        parties=_parties(accounts, change.requester, change.from_, change.to),
        idempotency_key=idempotency_key,
    )


def _validation_request(
    change: ContactChange, nics: list[str], accounts: Mapping[str, Account], generations: Mapping[str, int] | None = None
) -> ContactChangeValidationRequested | str:
    """The notifier's order to send tokens to `nics` (for the first round of codes unless
    `generations` says which), or why it cannot be given (an account gone)."""
    missing = [nic for nic in nics if nic not in accounts]
    if missing:
        return f"the account {', '.join(missing)} no longer exists"
    assert change.expires_at is not None, "loaded from the store"
    return ContactChangeValidationRequested(
        **_about(change),
        requester=change.requester,
        confirmers=[
            Confirmer(nic=nic, email=accounts[nic].email, generation=(generations or {}).get(nic, 1)) for nic in nics
        ],
        expires_at=change.expires_at,
    )


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
        return await store.submission_by_key(conn, requester, idempotency_key) if idempotency_key else None

    if (existing := await earlier_submission()) is not None:
        return existing
    if rate_limits is not None:
        now = utcnow()
        recent = await store.recent_submissions(conn, requester, now - HOUR)
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
                vet = ContactChangeRequested(**_about(change), phase=Phase.submit)
                await _announce(
                    conn,
                    change,
                    Transition(RequestState.checking, requester, "submitted"),
                    accounts=context.accounts,  # the requester's, the new and the current contacts'
                    after=(vet,),
                    idempotency_key=idempotency_key,
                )
                ids.append(request_id)
            if idempotency_key and not await store.record_submission(conn, requester, idempotency_key, ids):
                raise _DuplicateSubmission
    except _DuplicateSubmission:
        return await store.submission_by_key(conn, requester, idempotency_key or "") or []
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
            apply = (ContactChangeRequested(**_about(change), phase=Phase.apply),) if t.state == RequestState.applying else ()
            await _transition(conn, change, t, accounts=loaded.accounts, after=apply)
        return True


async def resend(conn: asyncpg.Connection, *, request_id: uuid.UUID, nic: str, rate_limits: RateLimits) -> list[str]:
    change = await _load_visible(conn, request_id, nic)
    pending = change.check_resend(nic)
    record = await store.resend_record(conn, request_id)
    now = utcnow()
    assert change.expires_at is not None
    check_resend(rate_limits, resends=record["resends"], last_resend_at=record["last_resend_at"], expires_at=change.expires_at, now=now)
    await store.count_resend(conn, request_id, now)
    generations = await store.new_round_of_codes(conn, request_id, pending)
    asked = _validation_request(change, pending, await replicas.accounts_by_nic(conn, pending), generations)
    if isinstance(asked, str):
        raise Refusal(Kind.conflict, "Cannot resend", f"The validation codes cannot be sent: {asked}.")
    await enqueue(conn, asked)
    await store.record_history(conn, request_id, change.state, nic, f"validation codes sent again to {', '.join(pending)}")
    return pending


async def cancel(conn: asyncpg.Connection, *, request_id: uuid.UUID, nic: str) -> None:
    change = await _load_visible(conn, request_id, nic)
    await _transition(conn, change, change.cancel(nic))


async def expire_overdue(pool: asyncpg.Pool) -> int:
    """End every open request whose time ran out (the domain says how), with its emails."""
    async with pool.acquire() as conn, conn.transaction():
        ids = await store.expired_request_ids(conn)
        for request_id in ids:
            change = await store.load_change(conn, request_id)
            assert change is not None
            if (t := change.time_is_up()) is not None:
                await _transition(conn, change, t)
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
                await enqueue(conn, ContactChangeRequested(**_about(change), phase=phase))
                await store.mark_vetting_asked(conn, request_id, change.state)
                log.warning("billing check asked again", request_id=change.id, phase=phase.value)
        return len(ids)


# --- messages in ------------------------------------------------------------------------------------


# The replicas follow the messages' `occurred_at`, not their arrival: an upsert or a delete older
# than what a row holds is ignored (store: "Replica rows are written in the order...").


def _stale(envelope: Envelope, **key: str) -> None:
    log.info("older than the replica, ignored", type=envelope.type, occurred_at=envelope.occurred_at.isoformat(), **key)


async def on_account_upserted(conn: asyncpg.Connection, envelope: Envelope, data: AccountUpserted) -> None:
    if not await replicas.upsert_account(conn, envelope, data.nic, data.email, data.zone.value):
        _stale(envelope, nic=data.nic)


async def on_account_deleted(conn: asyncpg.Connection, envelope: Envelope, data: AccountDeleted) -> None:
    if not await replicas.delete_account(conn, envelope, data.nic):
        _stale(envelope, nic=data.nic)


async def on_service_upserted(conn: asyncpg.Connection, envelope: Envelope, data: ServiceUpserted) -> None:
    if not await replicas.insert_service_if_new(conn, envelope, data.service, data.type, data.admin, data.tech, data.billing):
        _stale(envelope, service=data.service)


async def on_service_deleted(conn: asyncpg.Connection, envelope: Envelope, data: ServiceDeleted) -> None:
    if not await replicas.delete_service(conn, envelope, data.service):
        _stale(envelope, service=data.service)


async def on_vetted(conn: asyncpg.Connection, _: Envelope, data: ContactChangeVetted) -> None:
    # Vetting reads no confirmer's state (only who they are): they come in the same statement.
    loaded = await store.load(conn, data.request_id, for_update=True, confirmer_states=False)
    if loaded is None:
        log.warning("vetting for an unknown request ignored", request_id=str(data.request_id))
        return
    change, accounts = loaded.change, loaded.accounts  # the confirmers' accounts are among the parties'
    if data.phase == Phase.submit:
        t = change.vetted("submit", data.approved, data.reasons)
        if t is None:
            return
        before: tuple[Contract, ...] = ()
        if t.state == RequestState.validating:
            asked = _validation_request(change, list(change.confirmers), accounts)
            if isinstance(asked, str):
                t = Transition(RequestState.rejected, "system", asked)
            else:
                before = (asked,)
        await _transition(conn, change, t, accounts=accounts, before=before)
        return

    service = await replicas.get_service(conn, change.service, for_update=True)
    t = change.apply_outcome(data.approved, data.reasons, service.holder(change.type) if service else None)
    if t is None:
        return
    completed: tuple[Contract, ...] = ()
    if t.state == RequestState.done:
        await replicas.set_contact(conn, change.service, change.type, change.to)
        crash_point("during-apply")
        completed = (ContactChangeCompleted(**_about(change), completed_at=utcnow()),)
    await _transition(conn, change, t, accounts=accounts, after=completed)


async def on_token_issued(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeTokenIssued) -> bool:
    return await store.claim_and_store_token_hash(
        conn, envelope, data.request_id, data.nic, data.token_hash, data.expires_at, data.generation
    )


async def on_email_failed(conn: asyncpg.Connection, _: Envelope, data: ContactChangeEmailFailed) -> None:
    """The notifier gave up an email: the request's history says who could not be reached."""
    if (change := await store.load_change(conn, data.request_id)) is not None:
        await store.record_history(conn, data.request_id, change.state, "system", unreachable(data.nic, data.kind, data.smtp_code))


def submit_handler(request_ttl: timedelta) -> Handler:
    async def on_submit(conn: asyncpg.Connection, _: Envelope, data: ContactChangeSubmit) -> None:
        if (earlier := await store.submission_by_key(conn, data.requester, data.idempotency_key)) is not None:
            await _reannounce_submission(conn, earlier, data.idempotency_key)
            return
        try:
            async with conn.transaction():
                await submit(
                    conn,
                    requester=data.requester,
                    service_id=data.service,
                    changes=dict(data.changes.items()),
                    idempotency_key=data.idempotency_key,
                    request_ttl=request_ttl,
                )
        except Refusal as refusal:
            # The rules said no: nothing to retry, but the submitter hears it like any outcome.
            log.warning("submitted change refused", requester=data.requester, service=data.service, reason=str(refusal))
            await _announce_refused_submission(conn, data, refusal)

    return on_submit


async def _reannounce_submission(conn: asyncpg.Connection, request_ids: list[uuid.UUID], idempotency_key: str) -> None:
    """A `contact_change.submit` whose key created requests before creates nothing new; its
    publisher, who may have missed the first announcements (it publishes again precisely when it
    is unsure), hears the current state of each of those requests, with the key."""
    reasons = await store.reasons_of(conn, request_ids)
    announcements = []
    for request_id in request_ids:
        loaded = await store.load(conn, request_id, confirmer_states=False)
        if loaded is not None:
            change = loaded.change
            announcements.append(_state_changed(change, change.state, reasons.get(request_id), loaded.accounts, idempotency_key))
    if announcements:
        await enqueue(conn, *announcements)
    log.info("submission replayed: current states announced", idempotency_key=idempotency_key, requests=len(announcements))


def refused_request_id(data: ContactChangeSubmit, ctype: ContactType) -> uuid.UUID:
    """The id a refused submission's request would have had: stable for the same submission,
    so a resubmission with the same idempotency key announces the same id."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"contact_change.submit:{data.requester}:{data.idempotency_key}:{ctype.value}")


async def _announce_refused_submission(conn: asyncpg.Connection, data: ContactChangeSubmit, refusal: Refusal) -> None:
    """One `state_changed` per type asked, straight to `rejected` with the reason: no request
    was created (nothing to look up in the API), and the submitter matches it by idempotency key."""
    service = await replicas.get_service(conn, data.service)
    reason = refusal.detail
    if open_request := refusal.extra.get("open_request_id"):
        reason += f" (open request {open_request})"
    # `from` is the current holder; with an unknown service there is none and it repeats `to`.
    holders = {ctype: service.holder(ctype) if service else new for ctype, new in data.changes.items()}
    accounts = await replicas.accounts_by_nic(conn, [data.requester, *holders.values(), *(new for _, new in data.changes.items())])
    await enqueue(
        conn,
        *(
            ContactChangeStateChanged(
                request_id=refused_request_id(data, ctype),
                service=data.service,
                type=ctype,
                from_=holders[ctype],
                to=new,
                state=RequestState.rejected,
                reason=reason,
                parties=[
                    p for p in _parties(accounts, data.requester, holders[ctype], new) if service or p.role != "from"
                ],
                idempotency_key=data.idempotency_key,
            )
            for ctype, new in data.changes.items()
        ),
    )


def message_handlers(request_ttl: timedelta) -> dict[str, Handler]:
    return {
        "account.upserted": on_account_upserted,
        "account.deleted": on_account_deleted,
        "service.upserted": on_service_upserted,
        "service.deleted": on_service_deleted,
        "contact_change.vetted": on_vetted,
        # One statement that claims the message too: no transaction around it.
        "contact_change.token_issued": ClaimsItself(on_token_issued),
        "contact_change.email_failed": on_email_failed,
        "contact_change.submit": submit_handler(request_ttl),
    }

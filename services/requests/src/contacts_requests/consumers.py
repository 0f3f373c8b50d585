"""The messages the requests service consumes, one handler each: replicas of other systems'
accounts and services, the billing check's verdicts, the notifier's tokens and failures, and
submissions by message. Each runs in the consumer's transaction (contacts_shared.consumer)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import structlog
from contacts_shared.contracts import (
    AccountDeleted,
    AccountUpserted,
    ContactChangeEmailFailed,
    ContactChanges,
    ContactChangeStateChanged,
    ContactChangeSubmit,
    ContactChangeSubmitBatch,
    ContactChangeTokenIssued,
    ContactChangeVetted,
    ContactType,
    Envelope,
    Phase,
    RequestState,
    ServiceDeleted,
    ServiceUpserted,
)
from contacts_shared.handling import Runs, Subscription, ignored_as_stale, on
from contacts_shared.outbox import enqueue

from contacts_requests import batches, replicas, store, submissions
from contacts_requests.announcements import parties, state_changed
from contacts_requests.domain import Refusal, ReminderSchedule
from contacts_requests.handlers import submit
from contacts_requests.unit_of_work import UnitOfWork

log = structlog.get_logger("contacts.requests")


async def on_account_upserted(conn: asyncpg.Connection, envelope: Envelope, data: AccountUpserted) -> None:
    if not await replicas.upsert_account(conn, envelope, data.nic, data.email, data.zone.value, data.language):
        ignored_as_stale(envelope, nic=data.nic)


async def on_account_deleted(conn: asyncpg.Connection, envelope: Envelope, data: AccountDeleted) -> None:
    if not await replicas.delete_account(conn, envelope, data.nic):
        ignored_as_stale(envelope, nic=data.nic)


async def on_service_upserted(conn: asyncpg.Connection, envelope: Envelope, data: ServiceUpserted) -> None:
    if not await replicas.insert_service_if_new(conn, envelope, data.service, data.type, data.admin, data.tech, data.billing):
        ignored_as_stale(envelope, service=data.service)


async def on_service_deleted(conn: asyncpg.Connection, envelope: Envelope, data: ServiceDeleted) -> None:
    if not await replicas.delete_service(conn, envelope, data.service):
        ignored_as_stale(envelope, service=data.service)


async def on_vetted(conn: asyncpg.Connection, _: Envelope, data: ContactChangeVetted, *, reminders: ReminderSchedule) -> None:
    async with UnitOfWork(conn) as uow:
        at_submit = data.phase == Phase.submit
        # Vetting reads no confirmer's state (only who they are): they come in the same statement;
        # at submit, so does the service, whose admin may hear of it too (a heads-up).
        loaded = await uow.load(data.request_id, for_update=True, confirmer_states=False, with_service=at_submit)
        if loaded is None:
            log.warning("vetting for an unknown request ignored", request_id=str(data.request_id))
            return
        change, accounts = loaded.change, loaded.accounts
        if at_submit:
            admin = loaded.service.admin if loaded.service else None
            decision = change.vetted_at_submit(data.approved, data.reasons, accounts, admin, reminders)
        else:
            service = await replicas.get_service(conn, change.service, for_update=True)
            decision = change.vetted_at_apply(data.approved, data.reasons, service.holder(change.type) if service else None)
        if decision is not None:  # None: stale, the request moved on
            await uow.record(decision, accounts)


async def on_token_issued(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeTokenIssued) -> bool:
    return await store.claim_and_store_token_hash(
        conn, envelope, data.request_id, data.nic, data.token_hash, data.expires_at, data.generation, data.sent_to
    )


async def on_email_failed(conn: asyncpg.Connection, _: Envelope, data: ContactChangeEmailFailed) -> None:
    """The notifier gave up an email: the request's history says who could not be reached."""
    async with UnitOfWork(conn) as uow:
        if (loaded := await uow.load(data.request_id, confirmer_states=False)) is not None:
            await uow.record(loaded.change.not_reached(data.nic, data.kind, data.smtp_code), loaded.accounts)


async def on_submit(conn: asyncpg.Connection, _: Envelope, data: ContactChangeSubmit, *, request_ttl: timedelta) -> None:
    if (earlier := await submissions.submission_by_key(conn, data.requester, data.idempotency_key)) is not None:
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
            announcements.append(state_changed(change, change.state, reasons.get(request_id), loaded.accounts, idempotency_key))
    if announcements:
        await enqueue(conn, *announcements)
    log.info("submission replayed: current states announced", idempotency_key=idempotency_key, requests=len(announcements))


async def on_submit_batch(conn: asyncpg.Connection, _: Envelope, data: ContactChangeSubmitBatch, *, request_ttl: timedelta) -> None:
    """A batch by message: as through the API, each change judged on its own; the requests
    created announce themselves with the key, each change refused is announced `rejected`. The
    same key again announces the same again (the current states, the same refusals)."""
    entries = [(entry.service, dict(entry.changes.items())) for entry in data.changes]
    submitted = await batches.submit_batch(
        conn, requester=data.requester, entries=entries, idempotency_key=data.idempotency_key, request_ttl=request_ttl
    )
    if submitted.replayed:
        await _reannounce_submission(conn, submitted.request_ids, data.idempotency_key)
    by_service: dict[str, list[batches.Refused]] = {}
    for refused in submitted.refused:
        by_service.setdefault(refused.service, []).append(refused)
    for service, refusals in by_service.items():
        # Announced as the refusal of a submission of that service alone (its ids told apart).
        alone = ContactChangeSubmit(
            requester=data.requester,
            service=service,
            changes=ContactChanges(**{r.type.value: dict(entries)[service][r.type] for r in refusals}),
            idempotency_key=data.idempotency_key,
        )
        await _announce_refused_submission(conn, alone, refusals[0].refusal, salt=f":{service}")
    log.info("batch submitted by message", requester=data.requester, requests=len(submitted.request_ids), refused=len(submitted.refused))


def refused_request_id(data: ContactChangeSubmit, ctype: ContactType, salt: str = "") -> uuid.UUID:
    """The id a refused submission's request would have had: stable for the same submission,
    so a resubmission with the same idempotency key announces the same id (`salt` tells the
    services of a batch apart)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"contact_change.submit:{data.requester}:{data.idempotency_key}:{ctype.value}{salt}")


async def _announce_refused_submission(conn: asyncpg.Connection, data: ContactChangeSubmit, refusal: Refusal, salt: str = "") -> None:
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
                request_id=refused_request_id(data, ctype, salt),
                service=data.service,
                type=ctype,
                from_=holders[ctype],
                to=new,
                state=RequestState.rejected,
                reason=reason,
                parties=[
                    p for p in parties(accounts, data.requester, holders[ctype], new) if service or p.role != "from"
                ],
                idempotency_key=data.idempotency_key,
            )
            for ctype, new in data.changes.items()
        ),
    )


# `on_submit` and `on_submit_batch` need the `request_ttl` setting, given by name at start (main.py).
HANDLERS: tuple[Subscription, ...] = (
    on(AccountUpserted, on_account_upserted),
    on(AccountDeleted, on_account_deleted),
    on(ServiceUpserted, on_service_upserted),
    on(ServiceDeleted, on_service_deleted),
    on(ContactChangeVetted, on_vetted, runs=Runs.claimed_on_save),
    # One statement that claims the message too: no transaction around it.
    on(ContactChangeTokenIssued, on_token_issued, runs=Runs.claims_itself),
    on(ContactChangeEmailFailed, on_email_failed, runs=Runs.claimed_on_save),
    on(ContactChangeSubmit, on_submit),
    on(ContactChangeSubmitBatch, on_submit_batch),
)

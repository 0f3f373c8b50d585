"""Messages in: queue the emails they call for, each in its recipient's language (the nearest
there is to their account's). Sending happens in `mailer`, after commit."""

from __future__ import annotations

import asyncpg
from contacts_shared.contracts import (
    ContactChangeBatchValidationRequested,
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    Envelope,
    state_key,
)
from contacts_shared.handling import Runs, Subscription, on
from contacts_shared.i18n import supported

from contacts_notifier import store
from contacts_notifier.domain import (
    ROLES_FOR_STATE,
    heads_up_email,
    outcome_email,
    outcome_recipients,
)


async def on_validation_requested(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeValidationRequested) -> bool:
    context = {
        "service": data.service,
        "type": data.type.value,
        "from": data.from_,
        "to": data.to,
        "requester": data.requester,
        "expires_at": data.expires_at.isoformat(),
        "reminder": data.reminder,
    }
    confirmers = [(c.nic, c.email, c.generation, supported(c.language)) for c in data.confirmers]
    heads_up = [(i.nic, i.email, heads_up_email(data, i.nic, i.language)) for i in data.informed]
    return await store.claim_and_queue_token_mails(conn, envelope, data.request_id, confirmers, context, heads_up)


async def on_batch_validation_requested(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeBatchValidationRequested) -> bool:
    items = {str(item.request_id): item for item in data.items}
    mails = []
    for confirmer in data.confirmers:
        mine = [items[str(rid)] for rid in confirmer.request_ids if str(rid) in items]
        context = {
            "batch_id": str(data.batch_id),
            "requester": data.requester,
            "expires_at": data.expires_at.isoformat(),
            "items": [
                {"request_id": str(i.request_id), "service": i.service, "type": i.type.value, "from": i.from_, "to": i.to} for i in mine
            ],
        }
        mails.append((confirmer.nic, confirmer.email, context, supported(confirmer.language)))
    return await store.claim_and_queue_batch_mails(conn, envelope, data.batch_id, mails)


async def on_state_changed(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeStateChanged) -> bool:
    mails = [(r.nic, r.email, outcome_email(data, r.nic, r.language)) for r in outcome_recipients(data)]
    return await store.claim_and_queue_outcome_mails(conn, envelope, data.request_id, data.state.value, mails)


# Each message's emails are queued in one statement that also claims it (no transaction).
HANDLERS: tuple[Subscription, ...] = (
    on(ContactChangeValidationRequested, on_validation_requested, runs=Runs.claims_itself),
    on(ContactChangeBatchValidationRequested, on_batch_validation_requested, runs=Runs.claims_itself),
    # Bound by the states that mail someone only: the others never reach the notifier's queue.
    # One that mails nobody all the same (no party of that role) is acked without a transaction.
    on(
        ContactChangeStateChanged,
        on_state_changed,
        runs=Runs.claims_itself,
        concerns=lambda data: bool(outcome_recipients(data)),
        bound_by=[state_key(state) for state in ROLES_FOR_STATE],
    ),
)

"""Messages in: queue the emails they call for. Sending happens in `mailer`, after commit."""

from __future__ import annotations

import asyncpg
from contacts_shared.contracts import (
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    Envelope,
)
from contacts_shared.handling import Subscription, on

from contacts_notifier import store
from contacts_notifier.domain import heads_up_email, outcome_email, outcome_recipients


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
    confirmers = [(c.nic, c.email, c.generation) for c in data.confirmers]
    heads_up = [(i.nic, i.email, heads_up_email(data, i.nic)) for i in data.informed]
    return await store.claim_and_queue_token_mails(conn, envelope, data.request_id, confirmers, context, heads_up)


async def on_state_changed(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeStateChanged) -> bool:
    mails = [(r.nic, r.email, outcome_email(data, r.nic)) for r in outcome_recipients(data)]
    return await store.claim_and_queue_outcome_mails(conn, envelope, data.request_id, data.state.value, mails)


# Each message's emails are queued in one statement that also claims it (no transaction).
HANDLERS: tuple[Subscription, ...] = (
    on(ContactChangeValidationRequested, on_validation_requested, claims_itself=True),
    # Most states mail nobody: those messages are acked without touching the database.
    on(ContactChangeStateChanged, on_state_changed, claims_itself=True, concerns=lambda data: bool(outcome_recipients(data))),
)

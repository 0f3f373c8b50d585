"""Messages in: queue the emails they call for. Sending happens in `mailer`, after commit."""

from __future__ import annotations

import asyncpg
from contacts_shared.bus import Handler, Selective
from contacts_shared.contracts import (
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    Envelope,
)

from contacts_notifier import store
from contacts_notifier.domain import outcome_email, outcome_recipients


async def on_validation_requested(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeValidationRequested) -> None:
    context = {
        "service": data.service,
        "type": data.type.value,
        "from": data.from_,
        "to": data.to,
        "requester": data.requester,
        "expires_at": data.expires_at.isoformat(),
    }
    for confirmer in data.confirmers:
        await store.queue_token_mail(
            conn,
            dedupe_key=f"{envelope.message_id}:{confirmer.nic}",
            request_id=data.request_id,
            nic=confirmer.nic,
            email=confirmer.email,
            context=context,
        )


async def on_state_changed(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeStateChanged) -> None:
    for recipient in outcome_recipients(data):
        email = outcome_email(data, recipient.nic)
        await store.queue_outcome_mail(
            conn,
            dedupe_key=f"{envelope.message_id}:{recipient.nic}",
            request_id=data.request_id,
            nic=recipient.nic,
            email=recipient.email,
            subject=email.subject,
            body=email.body,
        )


HANDLERS: dict[str, Handler] = {
    "contact_change.validation_requested": on_validation_requested,
    # Most states mail nobody: those messages are acked without touching the database.
    "contact_change.state_changed": Selective(on_state_changed, concerns=lambda data: bool(outcome_recipients(data))),
}

"""The envelope every body travels in, the routing key of each contract, and parsing a body
received from the bus."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

# The two modules of contracts, by who publishes them (imported as modules: no package cycle).
import contacts_shared.contracts.contact_change as by_the_services
import contacts_shared.contracts.inbound as by_other_systems
from contacts_shared.contracts.base import Contract, UtcDatetime, utcnow

__all__ = [
    "CURRENT_VERSION",
    "MESSAGE_TYPES",
    "ROUTING_KEYS",
    "STATE_CHANGED",
    "Envelope",
    "MalformedMessage",
    "also_routed_by",
    "envelope_for",
    "parse_message",
    "reply_id",
    "state_key",
]

MESSAGE_TYPES: dict[str, type[Contract]] = {
    "account.upserted": by_other_systems.AccountUpserted,
    "account.deleted": by_other_systems.AccountDeleted,
    "service.upserted": by_other_systems.ServiceUpserted,
    "service.deleted": by_other_systems.ServiceDeleted,
    "invoice.issued": by_other_systems.InvoiceIssued,
    "invoice.paid": by_other_systems.InvoicePaid,
    "payment_method.upserted": by_other_systems.PaymentMethodUpserted,
    "payment_method.removed": by_other_systems.PaymentMethodRemoved,
    "contact_change.submit": by_other_systems.ContactChangeSubmit,
    "contact_change.submit_batch": by_other_systems.ContactChangeSubmitBatch,
    "contact_change.requested": by_the_services.ContactChangeRequested,
    "contact_change.vetted": by_the_services.ContactChangeVetted,
    "contact_change.validation_requested": by_the_services.ContactChangeValidationRequested,
    "contact_change.batch_validation_requested": by_the_services.ContactChangeBatchValidationRequested,
    "contact_change.token_issued": by_the_services.ContactChangeTokenIssued,
    "contact_change.email_failed": by_the_services.ContactChangeEmailFailed,
    "contact_change.state_changed": by_the_services.ContactChangeStateChanged,
    "contact_change.completed": by_the_services.ContactChangeCompleted,
    "contact_change.support_acted": by_the_services.ContactChangeSupportActed,
}
ROUTING_KEYS: dict[type[Contract], str] = {model: key for key, model in MESSAGE_TYPES.items()}
CURRENT_VERSION = 1
STATE_CHANGED = ROUTING_KEYS[by_the_services.ContactChangeStateChanged]


def state_key(state: str) -> str:
    """The key a state change to `state` is also routed by: `contact_change.state_changed.<state>`."""
    return f"{STATE_CHANGED}.{state}"


def also_routed_by(routing_key: str, body: str) -> tuple[str, ...]:
    """The keys a message of ours is routed by besides its type, sent as RabbitMQ's `BCC` header
    (which consumers do not see): a state change also by its state (`state_key`), so that a
    queue can take the states it needs only (the notifier mails on six of the nine). `body`: the
    envelope as published."""
    if routing_key != STATE_CHANGED:
        return ()
    return (state_key(json.loads(body)["data"]["state"]),)


class Envelope(BaseModel):
    """What travels on the wire. `message_id` is the consumer's idempotency key."""

    model_config = ConfigDict(extra="ignore")

    message_id: uuid.UUID
    type: str
    # Any is read; only the one this release knows is acted on (parse_message dead-letters others).
    version: int = Field(ge=1)
    occurred_at: UtcDatetime
    data: dict[str, Any]


def envelope_for(data: Contract, message_id: uuid.UUID | None = None) -> Envelope:
    return Envelope(
        message_id=message_id or uuid.uuid4(),
        type=ROUTING_KEYS[type(data)],
        version=CURRENT_VERSION,
        occurred_at=utcnow(),
        data=data.model_dump(mode="json", by_alias=True),
    )


def reply_id(to: Envelope, answer: Contract) -> uuid.UUID:
    """The message id of `answer` to the message `to`: the same whenever `to` is answered again."""
    return uuid.uuid5(to.message_id, ROUTING_KEYS[type(answer)])


class MalformedMessage(ValueError):
    """The body cannot be understood; it goes to the dead-letter queue with this reason."""


def parse_message(body: bytes, routing_key: str) -> tuple[Envelope, Contract]:
    """Parse a raw body into its envelope and typed data, or raise MalformedMessage with a reason."""
    try:
        envelope = Envelope.model_validate_json(body)
    except ValueError as exc:
        raise MalformedMessage(f"invalid envelope: {_short(exc)}") from None
    if envelope.type != routing_key:
        raise MalformedMessage(f"envelope type {envelope.type!r} does not match routing key {routing_key!r}")
    model = MESSAGE_TYPES.get(envelope.type)
    if model is None:
        raise MalformedMessage(f"unknown message type {envelope.type!r}")
    # A later version may mean something else by the same fields: read it as version 1 and the
    # service could act wrongly, so it waits in the dead-letter queue for a release that knows it.
    if envelope.version != CURRENT_VERSION:
        raise MalformedMessage(f"version {envelope.version} of {envelope.type} is not one this service knows (it knows {CURRENT_VERSION})")
    try:
        data = model.model_validate(envelope.data)
    except ValueError as exc:
        raise MalformedMessage(f"invalid {envelope.type} data: {_short(exc)}") from None
    return envelope, data


def _short(exc: Exception) -> str:
    """What was wrong, by field, without echoing the input: reasons end up in dead-letter headers
    and logs, and the input may hold personal data (emails) or secrets."""
    if isinstance(exc, ValidationError):
        text = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False, include_context=False)
        )
    else:
        text = " ".join(str(exc).split())
    return text[:500]

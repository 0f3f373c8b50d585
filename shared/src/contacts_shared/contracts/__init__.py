"""The message contracts: one pydantic model per routing key, used by producer and consumer.

Every body on the wire is an `Envelope` whose `data` is the model registered for its `type`
in `MESSAGE_TYPES`. Unknown extra fields are ignored (forward compatibility); a field added
later must be optional so messages from older producers stay valid.

The models live by who publishes them: `inbound` (other systems), `contact_change` (the
project's services), on what they are built from (`base`) and what carries them (`envelope`);
every name is importable from here.
"""

from __future__ import annotations

from contacts_shared.contracts.base import (
    NIC_PATTERN,
    ContactType,
    Contract,
    Nic,
    Phase,
    RequestState,
    ServiceId,
    UtcDatetime,
    Zone,
    normalize_nic,
    utcnow,
)
from contacts_shared.contracts.contact_change import (
    Confirmer,
    ContactChangeCompleted,
    ContactChangeEmailFailed,
    ContactChangeRequested,
    ContactChangeStateChanged,
    ContactChangeTokenIssued,
    ContactChangeValidationRequested,
    ContactChangeVetted,
    Generation,
    Party,
    hash_token,
)
from contacts_shared.contracts.envelope import (
    CURRENT_VERSION,
    MESSAGE_TYPES,
    ROUTING_KEYS,
    Envelope,
    MalformedMessage,
    envelope_for,
    parse_message,
)
from contacts_shared.contracts.inbound import (
    EMAIL_PATTERN,
    AccountDeleted,
    AccountUpserted,
    ContactChanges,
    ContactChangeSubmit,
    InvoiceIssued,
    InvoicePaid,
    PaymentMethodRemoved,
    PaymentMethodUpserted,
    ServiceDeleted,
    ServiceUpserted,
)

__all__ = [
    "CURRENT_VERSION",
    "EMAIL_PATTERN",
    "MESSAGE_TYPES",
    "NIC_PATTERN",
    "ROUTING_KEYS",
    "AccountDeleted",
    "AccountUpserted",
    "Confirmer",
    "ContactChangeCompleted",
    "ContactChangeEmailFailed",
    "ContactChangeRequested",
    "ContactChangeStateChanged",
    "ContactChangeSubmit",
    "ContactChangeTokenIssued",
    "ContactChangeValidationRequested",
    "ContactChangeVetted",
    "ContactChanges",
    "ContactType",
    "Contract",
    "Envelope",
    "Generation",
    "InvoiceIssued",
    "InvoicePaid",
    "MalformedMessage",
    "Nic",
    "Party",
    "PaymentMethodRemoved",
    "PaymentMethodUpserted",
    "Phase",
    "RequestState",
    "ServiceDeleted",
    "ServiceId",
    "ServiceUpserted",
    "UtcDatetime",
    "Zone",
    "envelope_for",
    "hash_token",
    "normalize_nic",
    "parse_message",
    "utcnow",
]

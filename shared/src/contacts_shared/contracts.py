"""The message contracts: one pydantic model per routing key, used by producer and consumer.

Every body on the wire is an `Envelope` whose `data` is the model registered for its `type`
in `MESSAGE_TYPES`. Unknown extra fields are ignored (forward compatibility); a field added
later must be optional so messages from older producers stay valid.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

NIC_PATTERN = re.compile(r"^[a-z]{2}[0-9]{1,9}-[a-z]{2,10}$")


def normalize_nic(value: Any) -> str:
    """Lower-case and trim a NIC handle, or raise ValueError naming what is wrong."""
    if not isinstance(value, str):
        raise ValueError("a NIC handle is a string such as aa00000-ovh")
    nic = value.strip().lower()
    if not NIC_PATTERN.match(nic):
        raise ValueError(f"{value!r} is not a NIC handle (expected two letters, digits, a dash and a suffix, like aa00000-ovh)")
    return nic


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a timestamp must carry its time zone (RFC 3339, e.g. 2026-01-31T12:00:00Z)")
    return value.astimezone(UTC)


Nic = Annotated[str, BeforeValidator(normalize_nic)]
ServiceId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Zone(StrEnum):
    EU = "EU"
    CA = "CA"
    US = "US"


class ContactType(StrEnum):
    admin = "admin"
    tech = "tech"
    billing = "billing"


class RequestState(StrEnum):
    checking = "checking"
    rejected = "rejected"
    validating = "validating"
    declined = "declined"
    cancelled = "cancelled"
    expired = "expired"
    applying = "applying"
    failed = "failed"
    done = "done"


class Phase(StrEnum):
    submit = "submit"
    apply = "apply"


class Contract(BaseModel):
    # Unknown fields are ignored so that producers may add fields before consumers know them.
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- published by other systems -------------------------------------------------------------


class AccountUpserted(Contract):
    nic: Nic
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    zone: Zone


class AccountDeleted(Contract):
    nic: Nic


class ServiceUpserted(Contract):
    service: ServiceId
    type: str = Field(min_length=1, max_length=64)
    # The contacts are taken only when the service is first known; afterwards they change
    # only through this project's requests.
    admin: Nic
    tech: Nic
    billing: Nic


class ServiceDeleted(Contract):
    service: ServiceId


class InvoiceIssued(Contract):
    invoice_id: str = Field(min_length=1, max_length=128)
    nic: Nic
    amount: str = Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="decimal amount as a string")
    currency: str = Field(min_length=3, max_length=3)
    due_at: UtcDatetime


class InvoicePaid(Contract):
    invoice_id: str = Field(min_length=1, max_length=128)


class PaymentMethodUpserted(Contract):
    payment_method_id: str = Field(min_length=1, max_length=128)
    nic: Nic
    kind: str = Field(min_length=1, max_length=64)
    valid_until: UtcDatetime | None = None


class PaymentMethodRemoved(Contract):
    payment_method_id: str = Field(min_length=1, max_length=128)


class ContactChanges(Contract):
    admin: Nic | None = None
    tech: Nic | None = None
    billing: Nic | None = None

    def items(self) -> list[tuple[ContactType, str]]:
        return [(t, v) for t in ContactType if (v := getattr(self, t.value)) is not None]


class ContactChangeSubmit(Contract):
    requester: Nic
    service: ServiceId
    changes: ContactChanges
    idempotency_key: str = Field(min_length=1, max_length=200)


# --- between the project's services and out to other systems --------------------------------


class ContactChangeRequested(Contract):
    request_id: uuid.UUID
    phase: Phase
    service: ServiceId
    type: ContactType
    from_: Nic = Field(alias="from")
    to: Nic

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True)


class ContactChangeVetted(Contract):
    request_id: uuid.UUID
    phase: Phase
    approved: bool
    reasons: list[str] = []


class Confirmer(Contract):
    nic: Nic
    email: str


class ContactChangeValidationRequested(Contract):
    request_id: uuid.UUID
    service: ServiceId
    type: ContactType
    from_: Nic = Field(alias="from")
    to: Nic
    requester: Nic
    confirmers: list[Confirmer]
    expires_at: UtcDatetime

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True)


class ContactChangeTokenIssued(Contract):
    request_id: uuid.UUID
    nic: Nic
    token_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the token, hex")
    expires_at: UtcDatetime


class Party(Contract):
    nic: Nic
    email: str
    role: Literal["requester", "from", "to"]


class ContactChangeStateChanged(Contract):
    request_id: uuid.UUID
    service: ServiceId
    type: ContactType
    from_: Nic = Field(alias="from")
    to: Nic
    state: RequestState
    reason: str | None = None
    parties: list[Party]

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True)


class ContactChangeCompleted(Contract):
    request_id: uuid.UUID
    service: ServiceId
    type: ContactType
    from_: Nic = Field(alias="from")
    to: Nic
    completed_at: UtcDatetime

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True)


MESSAGE_TYPES: dict[str, type[Contract]] = {
    "account.upserted": AccountUpserted,
    "account.deleted": AccountDeleted,
    "service.upserted": ServiceUpserted,
    "service.deleted": ServiceDeleted,
    "invoice.issued": InvoiceIssued,
    "invoice.paid": InvoicePaid,
    "payment_method.upserted": PaymentMethodUpserted,
    "payment_method.removed": PaymentMethodRemoved,
    "contact_change.submit": ContactChangeSubmit,
    "contact_change.requested": ContactChangeRequested,
    "contact_change.vetted": ContactChangeVetted,
    "contact_change.validation_requested": ContactChangeValidationRequested,
    "contact_change.token_issued": ContactChangeTokenIssued,
    "contact_change.state_changed": ContactChangeStateChanged,
    "contact_change.completed": ContactChangeCompleted,
}
ROUTING_KEYS: dict[type[Contract], str] = {model: key for key, model in MESSAGE_TYPES.items()}
CURRENT_VERSION = 1


class Envelope(BaseModel):
    """What travels on the wire. `message_id` is the consumer's idempotency key."""

    model_config = ConfigDict(extra="ignore")

    message_id: uuid.UUID
    type: str
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
    try:
        data = model.model_validate(envelope.data)
    except ValueError as exc:
        raise MalformedMessage(f"invalid {envelope.type} data: {_short(exc)}") from None
    return envelope, data


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:500]

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

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

NIC_PATTERN = re.compile(r"^[a-z]{2}[0-9]{1,9}-[a-z]{2,10}$")


def normalize_nic(value: Any) -> str:
    """Lower-case and trim a NIC handle, or raise ValueError naming what is wrong."""
    if not isinstance(value, str):
        raise ValueError("a NIC handle is a string such as aa00000-ovh")
    nic = value.strip().lower()
    if not NIC_PATTERN.match(nic):
        raise ValueError(
            f"{value!r} is not a NIC handle (expected two letters, digits, a dash and a suffix, like aa00000-ovh)"
        )
    return nic


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a timestamp must carry its time zone (RFC 3339, e.g. 2026-01-31T12:00:00Z)")
    return value.astimezone(UTC)


Nic = Annotated[
    str,
    BeforeValidator(normalize_nic),
    # What a publisher must send; consumers also trim it and lower-case it.
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[A-Za-z]{2}[0-9]{1,9}-[A-Za-z]{2,10}$",
            "description": "NIC handle, case-insensitive (stored and published lower-case), e.g. aa00000-ovh",
        }
    ),
]
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
    # `from` is a keyword: models carrying it name the field `from_` with the alias `from`, and
    # are built by field name and serialised by alias (subclasses' configs merge with this one).
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True)


# --- published by other systems -------------------------------------------------------------


# One address, nothing else: the local part's dot-atom characters (no comma, semicolon, quote,
# angle bracket or space, which would let an email header name more than one recipient) and a
# domain of letters, digits and hyphens.
EMAIL_PATTERN = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"



def _one_address(value: str) -> str:
    if not re.fullmatch(EMAIL_PATTERN, value):
        raise ValueError("must be one email address such as owner@example.com (no list, display name or spaces)")
    return value


class AccountUpserted(Contract):
    """A customer account was created or changed (accounts system)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"nic": "aa11111-ovh", "email": "owner@shop-example.test", "zone": "EU"}]}
    )

    nic: Nic
    email: Annotated[str, Field(min_length=3, max_length=320, json_schema_extra={"pattern": EMAIL_PATTERN}), AfterValidator(_one_address)]
    zone: Zone


class AccountDeleted(Contract):
    """A customer account was deleted (accounts system)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"nic": "gg77777-ovh"}]})

    nic: Nic


class ServiceUpserted(Contract):
    """A hosted service was created or changed; its contacts are taken only on creation."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "service": "shop-example.com",
                    "type": "domain",
                    "admin": "aa11111-ovh",
                    "tech": "cc33333-ovh",
                    "billing": "aa11111-ovh",
                }
            ]
        }
    )

    service: ServiceId
    type: str = Field(min_length=1, max_length=64)
    # The contacts are taken only when the service is first known; afterwards they change
    # only through this project's requests.
    admin: Nic
    tech: Nic
    billing: Nic


class ServiceDeleted(Contract):
    """A hosted service was deleted."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"service": "old-shop.example"}]})

    service: ServiceId


class InvoiceIssued(Contract):
    """An invoice was issued to an account (billing system); unpaid until `invoice.paid`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "invoice_id": "inv-2026-0042",
                    "nic": "dd44444-ovh",
                    "amount": "119.88",
                    "currency": "EUR",
                    "due_at": "2026-02-28T00:00:00Z",
                }
            ]
        }
    )

    invoice_id: str = Field(min_length=1, max_length=128)
    nic: Nic
    amount: str = Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="decimal amount as a string")
    currency: str = Field(min_length=3, max_length=3)
    due_at: UtcDatetime


class InvoicePaid(Contract):
    """An invoice was paid."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"invoice_id": "inv-2026-0042"}]})

    invoice_id: str = Field(min_length=1, max_length=128)


class PaymentMethodUpserted(Contract):
    """An account's payment method was added or changed; `valid_until` null means no expiry."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "payment_method_id": "pm-bb-card",
                    "nic": "bb22222-ovh",
                    "kind": "card",
                    "valid_until": "2028-12-31T23:59:59Z",
                }
            ]
        }
    )

    payment_method_id: str = Field(min_length=1, max_length=128)
    nic: Nic
    kind: str = Field(min_length=1, max_length=64)
    valid_until: UtcDatetime | None = None


class PaymentMethodRemoved(Contract):
    """A payment method was removed."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"payment_method_id": "pm-bb-card"}]})

    payment_method_id: str = Field(min_length=1, max_length=128)


def _only_named_types(schema: dict[str, Any]) -> None:
    """The schema says what the service accepts: each contact type given is a NIC handle (never
    null), no other key, at least one of them (pydantic would write `NIC or null`)."""
    for name, prop in schema["properties"].items():
        (nic,) = [choice for choice in prop.pop("anyOf") if choice.get("type") != "null"]
        prop.pop("default", None)
        prop.update(nic, description=f"the new {name} contact; leave the key out when it does not change")
    schema.update(minProperties=1, additionalProperties=False, description="at least one of admin, tech, billing")


class ContactChanges(Contract):
    # Unlike the rest of the contracts, no unknown key is ignored here: `{"owner": ...}` is a
    # mistake about what can change, not a field from a newer producer.
    model_config = ConfigDict(extra="forbid", json_schema_extra=_only_named_types)

    admin: Nic | None = None
    tech: Nic | None = None
    billing: Nic | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, value: Any) -> Any:
        if isinstance(value, dict) and (nulls := [key for key, given in value.items() if given is None]):
            raise ValueError(f"{', '.join(nulls)}: null is not a NIC handle (leave out a type that does not change)")
        return value

    @model_serializer(mode="wrap")
    def _absent_types_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # What this project publishes is what it accepts: a type that does not change is absent.
        return {key: value for key, value in handler(self).items() if value is not None}

    @model_validator(mode="after")
    def _names_one(self) -> ContactChanges:
        # An empty submission can never succeed: it is a malformed message, not a refusal.
        if not self.items():
            raise ValueError("name at least one of admin, tech or billing")
        return self

    def items(self) -> list[tuple[ContactType, str]]:
        return [(t, v) for t in ContactType if (v := getattr(self, t.value)) is not None]


class ContactChangeSubmit(Contract):
    """Ask for a contact change on behalf of `requester`, as the HTTP API does; the outcome comes as
    `contact_change.state_changed` carrying the same `idempotency_key`.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "requester": "aa11111-ovh",
                    "service": "shop-example.com",
                    "changes": {"tech": "bb22222-ovh"},
                    "idempotency_key": "support-ticket-8812",
                }
            ]
        }
    )

    requester: Nic
    service: ServiceId
    changes: ContactChanges
    idempotency_key: str = Field(min_length=1, max_length=200)


# --- between the project's services and out to other systems --------------------------------


class ContactChangeRequested(Contract):
    """The requests service asks the billing check to vet a request (at submission and before applying)."""

    request_id: uuid.UUID
    phase: Phase
    service: ServiceId
    type: ContactType
    from_: Nic = Field(alias="from")
    to: Nic

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b6f3f5e-3c1e-4f7a-9d55-2f0a8f3b9c11",
                    "phase": "submit",
                    "service": "shop-example.com",
                    "type": "tech",
                    "from": "cc33333-ovh",
                    "to": "bb22222-ovh",
                }
            ]
        },
    )


class ContactChangeVetted(Contract):
    """The billing check's verdict on a request."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b6f3f5e-3c1e-4f7a-9d55-2f0a8f3b9c11",
                    "phase": "submit",
                    "approved": False,
                    "reasons": ["dd44444-ovh has an unpaid invoice"],
                }
            ]
        }
    )

    request_id: uuid.UUID
    phase: Phase
    approved: bool
    reasons: list[str] = []


# Which round of validation codes a confirmer's code belongs to: 1 when the request asks, one
# more at each resend. Only a code of the confirmer's current round works, decided without
# comparing two hosts' clocks; the round also makes the code itself (an email sent again carries
# the same code).
Generation = Annotated[int, Field(ge=1, le=1_000_000, description="Round of validation codes: 1, then one more per resend")]


class Confirmer(Contract):
    nic: Nic
    email: str
    generation: Generation = 1


class ContactChangeValidationRequested(Contract):
    """The requests service asks the notifier to mail tokens to the confirmers."""

    request_id: uuid.UUID
    service: ServiceId
    type: ContactType
    from_: Nic = Field(alias="from")
    to: Nic
    requester: Nic
    confirmers: list[Confirmer]
    expires_at: UtcDatetime

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b6f3f5e-3c1e-4f7a-9d55-2f0a8f3b9c11",
                    "service": "shop-example.com",
                    "type": "tech",
                    "from": "cc33333-ovh",
                    "to": "bb22222-ovh",
                    "requester": "aa11111-ovh",
                    "confirmers": [
                        {"nic": "aa11111-ovh", "email": "owner@shop-example.test"},
                        {"nic": "bb22222-ovh", "email": "webmaster@shop-example.test"},
                    ],
                    "expires_at": "2026-02-14T12:00:00Z",
                }
            ]
        },
    )


class ContactChangeTokenIssued(Contract):
    """The notifier mailed a token; only its hash travels."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b6f3f5e-3c1e-4f7a-9d55-2f0a8f3b9c11",
                    "nic": "bb22222-ovh",
                    "token_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "expires_at": "2026-02-14T12:00:00Z",
                    "generation": 1,
                }
            ]
        }
    )

    request_id: uuid.UUID
    nic: Nic
    token_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the token, hex")
    expires_at: UtcDatetime
    generation: Generation = 1


class Party(Contract):
    nic: Nic
    email: str
    role: Literal["requester", "from", "to"]


class ContactChangeStateChanged(Contract):
    """A request changed state (every transition, including `checking`), or a submission was refused."""

    request_id: uuid.UUID
    service: ServiceId
    type: ContactType
    from_: Nic = Field(alias="from")
    to: Nic
    state: RequestState
    reason: str | None = None
    parties: list[Party]
    # Added after the first release (optional, so version stays 1): the `idempotency_key` of the
    # `contact_change.submit` this request came from, on the announcements of its submission.
    idempotency_key: str | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b6f3f5e-3c1e-4f7a-9d55-2f0a8f3b9c11",
                    "service": "shop-example.com",
                    "type": "tech",
                    "from": "cc33333-ovh",
                    "to": "bb22222-ovh",
                    "state": "validating",
                    "reason": "approved by the billing check",
                    "parties": [
                        {"nic": "aa11111-ovh", "email": "owner@shop-example.test", "role": "requester"},
                        {"nic": "cc33333-ovh", "email": "tech@shop-example.test", "role": "from"},
                        {"nic": "bb22222-ovh", "email": "webmaster@shop-example.test", "role": "to"},
                    ],
                    "idempotency_key": "support-ticket-8812",
                }
            ]
        },
    )


class ContactChangeCompleted(Contract):
    """A change was applied: the service's contact is now `to`."""

    request_id: uuid.UUID
    service: ServiceId
    type: ContactType
    from_: Nic = Field(alias="from")
    to: Nic
    completed_at: UtcDatetime

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b6f3f5e-3c1e-4f7a-9d55-2f0a8f3b9c11",
                    "service": "shop-example.com",
                    "type": "tech",
                    "from": "cc33333-ovh",
                    "to": "bb22222-ovh",
                    "completed_at": "2026-01-31T12:05:00Z",
                }
            ]
        },
    )


class ContactChangeEmailFailed(Contract):
    """The notifier gave up an email: the mail server refused it for good (a 5xx reply to its
    recipient or its content), as many times as CONTACTS_SMTP_MAX_REFUSALS allows."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "0b6f3f5e-3c1e-4f7a-9d55-2f0a8f3b9c11",
                    "nic": "bb22222-ovh",
                    "kind": "token",
                    "smtp_code": 550,
                }
            ]
        }
    )

    request_id: uuid.UUID
    nic: Nic = Field(description="Who could not be reached")
    kind: Literal["token", "outcome"] = Field(description="The email with a validation code, or one telling an outcome")
    smtp_code: int = Field(ge=500, le=599, description="The mail server's reply code")


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
    "contact_change.email_failed": ContactChangeEmailFailed,
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

"""Published by other systems: accounts, services, invoices, payment methods, and submissions of
contact changes by message."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from contacts_shared.contracts.base import (
    ContactType,
    Contract,
    Language,
    Nic,
    ServiceId,
    UtcDatetime,
    Zone,
    with_examples,
)

__all__ = ["EMAIL_PATTERN", "AccountDeleted", "AccountUpserted", "BatchSubmitEntry", "ContactChangeSubmit", "ContactChangeSubmitBatch", "ContactChanges", "InvoiceIssued", "InvoicePaid", "PaymentMethodRemoved", "PaymentMethodUpserted", "ServiceDeleted", "ServiceUpserted"]

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

    model_config = with_examples(
        {"nic": "aa11111-ovh", "email": "owner@shop-example.test", "zone": "EU"},
        {"nic": "bb22222-ovh", "email": "webmaster@shop-example.test", "zone": "EU", "language": "fr"},
    )

    nic: Nic
    email: Annotated[str, Field(min_length=3, max_length=320, json_schema_extra={"pattern": EMAIL_PATTERN}), AfterValidator(_one_address)]
    zone: Zone
    # Added after the first release (optional, so version stays 1): the emails to this account
    # and the pages it signs in to are in this language.
    language: Language = "en"


class AccountDeleted(Contract):
    """A customer account was deleted (accounts system)."""

    model_config = with_examples({"nic": "gg77777-ovh"})

    nic: Nic


class ServiceUpserted(Contract):
    """A hosted service was created or changed; its contacts are taken only on creation."""

    model_config = with_examples({"service": "shop-example.com", "type": "domain", "admin": "aa11111-ovh", "tech": "cc33333-ovh", "billing": "aa11111-ovh"})

    service: ServiceId
    type: str = Field(min_length=1, max_length=64)
    # The contacts are taken only when the service is first known; afterwards they change
    # only through this project's requests.
    admin: Nic
    tech: Nic
    billing: Nic


class ServiceDeleted(Contract):
    """A hosted service was deleted."""

    model_config = with_examples({"service": "old-shop.example"})

    service: ServiceId


class InvoiceIssued(Contract):
    """An invoice was issued to an account (billing system); unpaid until `invoice.paid`."""

    model_config = with_examples(
        {
            "invoice_id": "inv-2026-0042",
            "nic": "dd44444-ovh",
            "amount": "119.88",
            "currency": "EUR",
            "due_at": "2026-02-28T00:00:00Z",
        }
    )

    invoice_id: str = Field(min_length=1, max_length=128)
    nic: Nic
    amount: str = Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="decimal amount as a string")
    currency: str = Field(min_length=3, max_length=3)
    due_at: UtcDatetime


class InvoicePaid(Contract):
    """An invoice was paid."""

    model_config = with_examples({"invoice_id": "inv-2026-0042"})

    invoice_id: str = Field(min_length=1, max_length=128)


class PaymentMethodUpserted(Contract):
    """An account's payment method was added or changed; `valid_until` null means no expiry."""

    model_config = with_examples(
        {
            "payment_method_id": "pm-bb-card",
            "nic": "bb22222-ovh",
            "kind": "card",
            "valid_until": "2028-12-31T23:59:59Z",
        }
    )

    payment_method_id: str = Field(min_length=1, max_length=128)
    nic: Nic
    kind: str = Field(min_length=1, max_length=64)
    valid_until: UtcDatetime | None = None


class PaymentMethodRemoved(Contract):
    """A payment method was removed."""

    model_config = with_examples({"payment_method_id": "pm-bb-card"})

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

    model_config = with_examples(
        {
            "requester": "aa11111-ovh",
            "service": "shop-example.com",
            "changes": {"tech": "bb22222-ovh"},
            "idempotency_key": "support-ticket-8812",
        }
    )

    requester: Nic
    service: ServiceId
    changes: ContactChanges
    idempotency_key: str = Field(min_length=1, max_length=200)


class BatchSubmitEntry(Contract):
    """One service of a batch and the changes wanted on it."""

    service: ServiceId
    changes: ContactChanges


class ContactChangeSubmitBatch(Contract):
    """Ask for contact changes on several services at once on behalf of `requester`, as
    `POST /v1/contact-change-batches` does: one request per service and type, each judged on its
    own. Each outcome comes as `contact_change.state_changed` carrying the same `idempotency_key`
    (a refused change as `rejected`, with the reason)."""

    model_config = with_examples(
        {
            "requester": "aa11111-ovh",
            "changes": [
                {"service": "shop-example.com", "changes": {"tech": "bb22222-ovh"}},
                {"service": "blog-example.com", "changes": {"tech": "bb22222-ovh"}},
            ],
            "idempotency_key": "agency-migration-2026-01",
        }
    )

    requester: Nic
    changes: list[BatchSubmitEntry] = Field(min_length=1, max_length=100)
    idempotency_key: str = Field(min_length=1, max_length=200)

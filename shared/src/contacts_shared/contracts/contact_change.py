"""About contact changes, between the project's services and out to other systems."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Literal

from pydantic import (
    Field,
)

from contacts_shared.contracts.base import (
    ContactType,
    Contract,
    Language,
    Nic,
    Phase,
    RequestState,
    ServiceId,
    UtcDatetime,
    with_examples,
)

__all__ = ["AboutARequest", "BatchConfirmer", "BatchItem", "Confirmer", "ContactChangeBatchValidationRequested", "ContactChangeCompleted", "ContactChangeEmailFailed", "ContactChangeRequested", "ContactChangeStateChanged", "ContactChangeSupportActed", "ContactChangeTokenIssued", "ContactChangeValidationRequested", "ContactChangeVetted", "Generation", "Informed", "Party", "hash_token"]

# The request the examples are about: the fields every message about a request starts with.
_A_CHANGE = {
    "request_id": "0b6f3f5e-3c1e-4f7a-9d55-2f0a8f3b9c11",
    "service": "shop-example.com",
    "type": "tech",
    "from": "cc33333-ovh",
    "to": "bb22222-ovh",
}


class AboutARequest(Contract):
    """The fields every message about a request starts with: which request, on which service,
    which contact, from whom to whom."""

    request_id: uuid.UUID
    service: ServiceId
    type: ContactType
    from_: Nic = Field(alias="from")
    to: Nic


class ContactChangeRequested(AboutARequest):
    """The requests service asks the billing check to vet a request (at submission and before applying)."""

    phase: Phase

    model_config = with_examples({**_A_CHANGE, "phase": "submit"})


class ContactChangeVetted(Contract):
    """The billing check's verdict on a request."""

    model_config = with_examples(
        {
            "request_id": _A_CHANGE["request_id"],
            "phase": "submit",
            "approved": False,
            "reasons": ["dd44444-ovh has an unpaid invoice"],
        }
    )

    request_id: uuid.UUID
    phase: Phase
    approved: bool
    reasons: list[str] = []  # noqa: RUF012 - a pydantic field: each model gets its own copy


# Which round of validation codes a confirmer's code belongs to: 1 when the request asks, one
# more at each resend. Only a code of the confirmer's current round works, decided without
# comparing two hosts' clocks; the round also makes the code itself (an email sent again carries
# the same code).
Generation = Annotated[int, Field(ge=1, le=1_000_000, description="Round of validation codes: 1, then one more per resend")]


# Added after the first release (optional, so version stays 1): the language of each recipient's
# account (`account.upserted`), which their email is written in.
RecipientLanguage = Annotated[Language, Field(description="The language of the recipient's account: their email is written in it")]


class Confirmer(Contract):
    nic: Nic
    email: str
    generation: Generation = 1
    language: RecipientLanguage = "en"


class Informed(Contract):
    nic: Nic
    email: str
    language: RecipientLanguage = "en"


class ContactChangeValidationRequested(AboutARequest):
    """The requests service asks the notifier to mail tokens to the confirmers, and a heads-up
    to those it tells without asking them anything."""

    requester: Nic
    confirmers: list[Confirmer]
    expires_at: UtcDatetime
    informed: list[Informed] = Field(
        default_factory=list,
        description="Told of the request, no code and nothing to do: the contact being replaced when someone else asked, "
        "the service's administrative contact when a technical or billing contact hands over. Empty for a resend",
    )
    reminder: bool = Field(False, description="These codes remind confirmers who have not answered (their previous codes stopped working)")

    model_config = with_examples(
        {
            **_A_CHANGE,
            "requester": "aa11111-ovh",
            "confirmers": [
                {"nic": "aa11111-ovh", "email": "owner@shop-example.test"},
                {"nic": "bb22222-ovh", "email": "webmaster@shop-example.test", "language": "fr"},
            ],
            "expires_at": "2026-02-14T12:00:00Z",
            "informed": [{"nic": "cc33333-ovh", "email": "previous-agency@shop-example.test"}],
        }
    )


class BatchItem(AboutARequest):
    """One request of a batch: what it changes."""


class BatchConfirmer(Contract):
    nic: Nic
    email: str
    request_ids: list[uuid.UUID] = Field(min_length=1, description="The requests of the batch waiting for this confirmer")
    language: RecipientLanguage = "en"


class ContactChangeBatchValidationRequested(Contract):
    """The requests service asks the notifier to mail each confirmer of a batch one email with one
    code that answers every request of the batch waiting for them (sent once none of the batch's
    requests is still being checked; those refused meanwhile are left out)."""

    batch_id: uuid.UUID
    requester: Nic
    items: list[BatchItem] = Field(min_length=1)
    confirmers: list[BatchConfirmer] = Field(min_length=1)
    expires_at: UtcDatetime

    model_config = with_examples(
        {
            "batch_id": "5d1c7a52-98f1-4a0e-b7a3-4b6c0f1e2d33",
            "requester": "aa11111-ovh",
            "items": [
                _A_CHANGE,
                {**_A_CHANGE, "request_id": "7c2e1f9a-5b3d-4e8f-a1c6-d4b9e0f2a3b4", "service": "blog-example.com"},
            ],
            "confirmers": [
                {"nic": "aa11111-ovh", "email": "owner@shop-example.test", "request_ids": [_A_CHANGE["request_id"], "7c2e1f9a-5b3d-4e8f-a1c6-d4b9e0f2a3b4"]},
                {"nic": "bb22222-ovh", "email": "webmaster@shop-example.test", "request_ids": [_A_CHANGE["request_id"], "7c2e1f9a-5b3d-4e8f-a1c6-d4b9e0f2a3b4"]},
            ],
            "expires_at": "2026-02-14T12:00:00Z",
        }
    )


class ContactChangeTokenIssued(Contract):
    """The notifier is mailing a token (announced before each attempt to send its email); only
    its hash and the masked address travel."""

    model_config = with_examples(
        {
            "request_id": _A_CHANGE["request_id"],
            "nic": "bb22222-ovh",
            "token_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "expires_at": "2026-02-14T12:00:00Z",
            "generation": 1,
            "sent_to": "w•••@shop-example.test",
        }
    )

    request_id: uuid.UUID
    nic: Nic
    token_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the token, hex")
    expires_at: UtcDatetime
    generation: Generation = 1
    sent_to: str | None = Field(
        None,
        max_length=320,
        description="Where the code is mailed, masked: the mailbox's first letter and the domain (w•••@shop-example.test). "
        "Announced just before the email is handed to the mail server, again at each attempt",
    )


def hash_token(token: str) -> str:
    """The `token_hash` of a validation code: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class Party(Contract):
    nic: Nic
    email: str
    role: Literal["requester", "from", "to"]
    language: RecipientLanguage = "en"


class ContactChangeStateChanged(AboutARequest):
    """A request changed state (every transition, including `checking`), or a submission was refused."""

    state: RequestState
    reason: str | None = None
    parties: list[Party]
    # Added after the first release (optional, so version stays 1): the `idempotency_key` of the
    # `contact_change.submit` this request came from, on the announcements of its submission.
    idempotency_key: str | None = None

    model_config = with_examples(
        {
            **_A_CHANGE,
            "state": "validating",
            "reason": "approved by the billing check",
            "parties": [
                {"nic": "aa11111-ovh", "email": "owner@shop-example.test", "role": "requester"},
                {"nic": "cc33333-ovh", "email": "tech@shop-example.test", "role": "from"},
                {"nic": "bb22222-ovh", "email": "webmaster@shop-example.test", "role": "to", "language": "fr"},
            ],
            "idempotency_key": "support-ticket-8812",
        }
    )


class ContactChangeCompleted(AboutARequest):
    """A change was applied: the service's contact is now `to`."""

    completed_at: UtcDatetime

    model_config = with_examples(
        {
            **_A_CHANGE,
            "completed_at": "2026-01-31T12:05:00Z",
        }
    )


class ContactChangeSupportActed(AboutARequest):
    """A support agent acted on a request: cancelled it, unlocked a confirmer's code locked after
    too many wrong tries, or had new codes sent; the request's history says so too. A cancel is
    also announced as the `state_changed` to `cancelled` it causes."""

    agent: Nic = Field(description="The agent, as the identity provider names them")
    action: Literal["cancel", "unlock", "resend"]
    reason: str = Field(min_length=1, max_length=500, description="Why, in the agent's words")
    confirmer: Nic | None = Field(None, description="Whose code was unlocked (`unlock` only)")
    acted_at: UtcDatetime

    model_config = with_examples(
        {
            **_A_CHANGE,
            "agent": "zz99999-ovh",
            "action": "unlock",
            "reason": "ticket 4411: the customer mistyped the code from a printed email",
            "confirmer": "bb22222-ovh",
            "acted_at": "2026-01-31T12:03:00Z",
        }
    )


class ContactChangeEmailFailed(Contract):
    """The notifier gave up an email: the mail server refused it for good (a 5xx reply to its
    recipient or its content), as many times as CONTACTS_SMTP_MAX_REFUSALS allows."""

    model_config = with_examples(
        {
            "request_id": _A_CHANGE["request_id"],
            "nic": "bb22222-ovh",
            "kind": "token",
            "smtp_code": 550,
        }
    )

    request_id: uuid.UUID
    nic: Nic = Field(description="Who could not be reached")
    kind: Literal["token", "outcome"] = Field(description="The email with a validation code, or one telling an outcome")
    smtp_code: int = Field(ge=500, le=599, description="The mail server's reply code")

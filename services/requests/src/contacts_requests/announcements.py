"""The messages about a request that the requests service publishes (to the notifier, the
billing check and other systems), built from the request and its parties' accounts. The unit of
work queues them with the writes they announce."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from typing import Any

from contacts_shared.contracts import (
    Confirmer,
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    Informed,
    Party,
    RequestState,
)

from contacts_requests.contact_change import ContactChange
from contacts_requests.domain import Account


def about(change: ContactChange) -> dict[str, Any]:
    """The fields every message about a request starts with."""
    return {
        "request_id": uuid.UUID(change.id),
        "service": change.service,
        "type": change.type,
        "from_": change.from_,
        "to": change.to,
    }


def parties(accounts: Mapping[str, Account], requester: str, from_: str, to: str) -> list[Party]:
    return [
        Party(nic=nic, email=accounts[nic].email, role=role, language=accounts[nic].language)
        for role, nic in (("requester", requester), ("from", from_), ("to", to))
        if nic in accounts
    ]


def state_changed(
    change: ContactChange,
    state: RequestState,
    reason: str | None,
    accounts: Mapping[str, Account],
    idempotency_key: str | None = None,
) -> ContactChangeStateChanged:
    return ContactChangeStateChanged(
        **about(change),
        state=state,
        reason=reason,
        parties=parties(accounts, change.requester, change.from_, change.to),
        idempotency_key=idempotency_key,
    )


def validation_request(
    change: ContactChange,
    nics: Collection[str],
    accounts: Mapping[str, Account],
    generations: Mapping[str, int] | None = None,
    told: Collection[str] = (),
    *,
    reminder: bool = False,
) -> ContactChangeValidationRequested:
    """The notifier's order to send codes to `nics` (the first round unless `generations` says
    which) and a heads-up to `told`; the domain names only people whose account it knows."""
    assert change.expires_at is not None, "loaded from the store"
    return ContactChangeValidationRequested(
        **about(change),
        requester=change.requester,
        confirmers=[
            Confirmer(nic=nic, email=accounts[nic].email, generation=(generations or {}).get(nic, 1), language=accounts[nic].language)
            for nic in nics
        ],
        expires_at=change.expires_at,
        informed=[Informed(nic=nic, email=accounts[nic].email, language=accounts[nic].language) for nic in told],
        reminder=reminder,
    )

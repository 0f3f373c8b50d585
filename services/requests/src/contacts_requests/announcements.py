"""How the requests service tells the others what happened: each transition recorded with the
messages that announce it (to the notifier, the billing check and other systems), queued in the
outbox in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import structlog
from contacts_shared.contracts import (
    Confirmer,
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    Contract,
    Party,
    RequestState,
)
from contacts_shared.outbox import enqueue

from contacts_requests import replicas, store
from contacts_requests.domain import Account, ContactChange, Transition

log = structlog.get_logger("contacts.requests")


async def transition(conn: asyncpg.Connection, change: ContactChange, t: Transition, **announced: Any) -> None:
    """Record a transition and announce it (`announce`'s keyword arguments)."""
    await store.set_state(conn, uuid.UUID(change.id), t.state, t.actor, t.reason)
    await announce(conn, change, t, **announced)


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
        Party(nic=nic, email=accounts[nic].email, role=role)
        for role, nic in (("requester", requester), ("from", from_), ("to", to))
        if nic in accounts
    ]


async def announce(
    conn: asyncpg.Connection,
    change: ContactChange,
    t: Transition,
    *,
    accounts: Mapping[str, Account] | None = None,
    before: Sequence[Contract] = (),
    after: Sequence[Contract] = (),
    idempotency_key: str | None = None,
) -> None:
    """Tell the notifier and other systems the request's new state, with its parties' emails
    (from `accounts` when the caller has them). The messages that go with it (`before` and
    `after` it) are queued in the same statement."""
    if accounts is None:
        accounts = await replicas.accounts_by_nic(conn, [change.requester, change.from_, change.to])
    announcement = state_changed(change, t.state, t.reason, accounts, idempotency_key)
    await enqueue(conn, *before, announcement, *after)
    log.info("request state changed", request_id=change.id, state=t.state.value, actor=t.actor)


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
    change: ContactChange, nics: list[str], accounts: Mapping[str, Account], generations: Mapping[str, int] | None = None
) -> ContactChangeValidationRequested | str:
    """The notifier's order to send tokens to `nics` (for the first round of codes unless
    `generations` says which), or why it cannot be given (an account gone)."""
    missing = [nic for nic in nics if nic not in accounts]
    if missing:
        return f"the account {', '.join(missing)} no longer exists"
    assert change.expires_at is not None, "loaded from the store"
    return ContactChangeValidationRequested(
        **about(change),
        requester=change.requester,
        confirmers=[
            Confirmer(nic=nic, email=accounts[nic].email, generation=(generations or {}).get(nic, 1)) for nic in nics
        ],
        expires_at=change.expires_at,
    )



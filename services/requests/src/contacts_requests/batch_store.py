"""SQL of batches: a batch and what its requests need for its codes to go out together."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from contacts_shared.contracts import ContactType, RequestState

from contacts_requests.contact_change import ContactChange
from contacts_requests.domain import BatchMember
from contacts_requests.views import change_of


@dataclass(frozen=True)
class BatchRequest:
    """A request of a batch, as the batch's email lists it."""

    member: BatchMember
    service: str
    type: ContactType
    from_: str
    to: str
    expires_at: datetime


@dataclass(frozen=True)
class BatchFacts:
    requester: str
    codes_asked: bool
    requests: list[BatchRequest]


async def insert_batch(conn: asyncpg.Connection, batch_id: uuid.UUID, requester: str) -> None:
    await conn.execute("INSERT INTO batches (id, requester) VALUES ($1, $2)", batch_id, requester)


async def codes_asked(conn: asyncpg.Connection, batch_id: uuid.UUID) -> bool:
    """Whether the batch's codes went (without a lock: once set, it stays set)."""
    return bool(await conn.fetchval("SELECT codes_asked_at IS NOT NULL FROM batches WHERE id = $1", batch_id))


async def lock_facts(conn: asyncpg.Connection, batch_id: uuid.UUID) -> BatchFacts | None:
    """The batch, locked (whoever decides on its codes next waits), and its requests, read after
    the lock: their states as the previous holder of the lock committed them."""
    batch = await conn.fetchrow("SELECT requester, codes_asked_at FROM batches WHERE id = $1 FOR UPDATE", batch_id)
    if batch is None:
        return None
    rows = await conn.fetch(
        "SELECT r.id, r.service, r.type, r.from_nic, r.to_nic, r.state, r.expires_at,"
        " ARRAY(SELECT c.nic FROM confirmers c WHERE c.request_id = r.id AND c.state = 'pending' ORDER BY c.nic) AS waiting"
        " FROM contact_changes r WHERE r.batch_id = $1 ORDER BY r.service, r.type",
        batch_id,
    )
    return BatchFacts(
        requester=batch["requester"],
        codes_asked=batch["codes_asked_at"] is not None,
        requests=[
            BatchRequest(
                member=BatchMember(str(r["id"]), RequestState(r["state"]), tuple(r["waiting"])),
                service=r["service"],
                type=ContactType(r["type"]),
                from_=r["from_nic"],
                to=r["to_nic"],
                expires_at=r["expires_at"],
            )
            for r in rows
        ],
    )


async def mark_codes_asked(conn: asyncpg.Connection, batch_id: uuid.UUID) -> None:
    await conn.execute("UPDATE batches SET codes_asked_at = now() WHERE id = $1", batch_id)


async def requests_of_batch(conn: asyncpg.Connection, batch_id: uuid.UUID) -> list[ContactChange]:
    """The batch's requests as the state machine sees them (who may see and answer each), in one
    statement."""
    rows = await conn.fetch(
        'SELECT r.id, r.service, r.type, r.from_nic AS "from", r.to_nic AS "to", r.requester, r.state, r.expires_at,'
        " r.created_at, r.reminders, r.batch_id,"
        " ARRAY(SELECT ROW(c.nic, c.state) FROM confirmers c WHERE c.request_id = r.id ORDER BY c.nic) AS confirmers"
        " FROM contact_changes r WHERE r.batch_id = $1 ORDER BY r.service, r.type",
        batch_id,
    )
    return [change_of(r, {nic: state for nic, state in r["confirmers"]}) for r in rows]

"""What "my contacts", a request and "my requests" look like to the API and the pages: read
models, each one statement."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
from contacts_shared.contracts import ContactType, RequestState

from contacts_requests.contact_change import ContactChange
from contacts_requests.tokens import MAX_TOKEN_FAILURES


async def my_contacts(conn: asyncpg.Connection, nic: str, *, service: str | None = None) -> list[dict[str, Any]]:
    """The services `nic` is a contact of (only `service`, when named): each with its type, the
    roles `nic` holds there and its three contacts."""
    where, args = "(admin = $1 OR tech = $1 OR billing = $1)", [nic]
    if service is not None:
        where, args = where + " AND service = $2", [nic, service]
    rows = await conn.fetch(f"SELECT service, type, admin, tech, billing FROM services WHERE {where} ORDER BY service", *args)
    return [{**_service(r), "roles": [t.value for t in ContactType if r[t.value] == nic]} for r in rows]


async def service_row(conn: asyncpg.Connection, service: str) -> dict[str, Any] | None:
    """A service, its type and its three contacts; None when unknown (or deleted)."""
    row = await conn.fetchrow("SELECT service, type, admin, tech, billing FROM services WHERE service = $1", service)
    return _service(row) if row else None


def _service(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"service": row["service"], "type": row["type"], "contacts": {t.value: row[t.value] for t in ContactType}}


def change_of(request: Mapping[str, Any], confirmers: Mapping[str, str]) -> ContactChange:
    """The state machine of a request read here (its view, or a row with the same names), to
    ask the domain what may be done with it."""
    return ContactChange(
        id=str(request["id"]),
        service=request["service"],
        type=ContactType(request["type"]),
        from_=request["from"],
        to=request["to"],
        requester=request["requester"],
        state=RequestState(request["state"]),
        confirmers=confirmers,
        expires_at=request.get("expires_at"),
        created_at=request.get("created_at"),
        reminders=request.get("reminders", 0),
    )


_VIEW_CONFIRMER = ("nic", "state", "answered_at", "sent_to", "sent_at")
_VIEW_HISTORY = ("at", "state", "actor", "reason")


async def request_view(conn: asyncpg.Connection, request_id: uuid.UUID, *, for_support: bool = False) -> dict | None:
    """A request with its confirmers and history; `for_support` also says whose code is locked
    after too many wrong tries (what an agent may unlock)."""
    # One statement, since every API write answers with this view: confirmers and history as
    # arrays of rows, which keep their column types.
    row = await conn.fetchrow(
        "SELECT r.*,"
        " ARRAY(SELECT ROW(c.nic, c.state, c.answered_at, c.sent_to, c.sent_at, c.failures >= $2) FROM confirmers c WHERE c.request_id = r.id ORDER BY c.nic) AS confirmers,"
        " ARRAY(SELECT ROW(h.at, h.state, h.actor, h.reason) FROM history h WHERE h.request_id = r.id ORDER BY h.id) AS history"
        " FROM contact_changes r WHERE r.id = $1",
        request_id,
        MAX_TOKEN_FAILURES,
    )
    if row is None:
        return None
    confirmer_fields = (*_VIEW_CONFIRMER, "locked") if for_support else _VIEW_CONFIRMER
    return {
        "id": str(row["id"]),
        "service": row["service"],
        "type": row["type"],
        "from": row["from_nic"],
        "to": row["to_nic"],
        "requester": row["requester"],
        "state": row["state"],
        "reason": row["reason"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "expires_at": row["expires_at"],
        "confirmers": [dict(zip(confirmer_fields, c[: len(confirmer_fields)], strict=True)) for c in row["confirmers"]],
        "history": [dict(zip(_VIEW_HISTORY, h, strict=True)) for h in row["history"]],
    }


async def requests_of(
    conn: asyncpg.Connection,
    nic: str,
    *,
    state: str | None,
    role: str | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[uuid.UUID]:
    """Ids of the requests `nic` is a party of, newest first (keyset pagination)."""
    roles = [role] if role else ["requester", "from", "to"]
    column = {"requester": "requester", "from": "from_nic", "to": "to_nic"}
    # One indexed branch per role, merged: no scan that grows with everybody's history.
    branches = " UNION ".join(
        f"SELECT id, created_at FROM contact_changes WHERE {column[r]} = $1"
        " AND ($2::text IS NULL OR state = $2)"
        " AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))"
        for r in roles
    )
    rows = await conn.fetch(
        f"SELECT id, created_at FROM ({branches}) AS mine ORDER BY created_at DESC, id DESC LIMIT $5",
        nic,
        state,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [r["id"] for r in rows]


async def requests_of_service(
    conn: asyncpg.Connection, service: str, *, limit: int, before: tuple[datetime, uuid.UUID] | None
) -> list[uuid.UUID]:
    """Ids of a service's requests, newest first (keyset pagination): what support looks up."""
    rows = await conn.fetch(
        "SELECT id FROM contact_changes WHERE service = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))"
        " ORDER BY created_at DESC, id DESC LIMIT $4",
        service,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [r["id"] for r in rows]

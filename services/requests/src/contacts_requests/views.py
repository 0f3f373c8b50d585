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


async def my_contacts(
    conn: asyncpg.Connection,
    nic: str,
    *,
    service: str | None = None,
    role: str | None = None,
    type_: str | None = None,
    text: str | None = None,
    after: str | None = None,
    limit: int | None = None,
    among: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The services `nic` is a contact of, in the order of their ids: each with its type, the
    roles `nic` holds there and its three contacts. Only `service`, when named; only those where
    `nic` holds `role`, of type `type_`, whose id contains `text` (any case), after the id
    `after` (keyset paging), among the ids `among`; at most `limit`.

    One statement: a branch per role, each reading the index on (that role, service) from `after`
    on and stopping at `limit`, merged; a page costs what it shows, however many services the
    account has. Only the conditions given are written, so that every plan can use the index."""
    args: list[Any] = [nic]
    conditions = ""
    wanted = {"service =": service, "type =": type_, "service ILIKE": like_pattern(text) if text else None, "service >": after}
    for condition, value in wanted.items():
        if value is not None:
            args.append(value)
            conditions += f" AND {condition} ${len(args)}"
    if among is not None:
        args.append(among)
        conditions += f" AND service = ANY(${len(args)}::text[])"
    limited = ""
    if limit is not None:
        args.append(limit)
        limited = f" LIMIT ${len(args)}"
    columns = [ContactType(role).value] if role else [t.value for t in ContactType]
    branches = " UNION ".join(
        f"(SELECT service, type, admin, tech, billing FROM services WHERE {column} = $1{conditions} ORDER BY service{limited})"
        for column in columns
    )
    rows = await conn.fetch(f"SELECT * FROM ({branches}) AS mine ORDER BY service{limited}", *args)
    return [{**_service(r), "roles": [t.value for t in ContactType if r[t.value] == nic]} for r in rows]


def like_pattern(text: str) -> str:
    """An ILIKE pattern for `text` anywhere, its own `%`, `_` and `\\` taken literally (backslash
    is LIKE's escape character)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def service_types_of(conn: asyncpg.Connection, nic: str) -> list[str]:
    """The types of the services `nic` is a contact of, for the filter of "my contacts"."""
    rows = await conn.fetch("SELECT DISTINCT type FROM services WHERE admin = $1 OR tech = $1 OR billing = $1 ORDER BY type", nic)
    return [r["type"] for r in rows]


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
        batch_id=str(request["batch_id"]) if request.get("batch_id") else None,
    )


_VIEW_CONFIRMER = ("nic", "state", "answered_at", "sent_to", "sent_at")
_VIEW_HISTORY = ("at", "state", "actor", "reason")


# One statement, since every API write answers with this view: confirmers and history as arrays
# of rows, which keep their column types.
_VIEW_SQL = (
    "SELECT r.*,"
    " ARRAY(SELECT ROW(c.nic, c.state, c.answered_at, c.sent_to, c.sent_at, c.failures >= $2) FROM confirmers c WHERE c.request_id = r.id ORDER BY c.nic) AS confirmers,"
    " ARRAY(SELECT ROW(h.at, h.state, h.actor, h.reason) FROM history h WHERE h.request_id = r.id ORDER BY h.id) AS history"
    " FROM contact_changes r"
)


async def request_view(conn: asyncpg.Connection, request_id: uuid.UUID, *, for_support: bool = False) -> dict | None:
    """A request with its confirmers and history; `for_support` also says whose code is locked
    after too many wrong tries (what an agent may unlock)."""
    row = await conn.fetchrow(f"{_VIEW_SQL} WHERE r.id = $1", request_id, MAX_TOKEN_FAILURES)
    return _view_of(row, for_support=for_support) if row else None


async def request_views(conn: asyncpg.Connection, request_ids: list[uuid.UUID], *, for_support: bool = False) -> list[dict]:
    """The views of `request_ids` that exist, in that order, in one statement (a page of them)."""
    rows = await conn.fetch(f"{_VIEW_SQL} WHERE r.id = ANY($1::uuid[])", request_ids, MAX_TOKEN_FAILURES)
    found = {row["id"]: _view_of(row, for_support=for_support) for row in rows}
    return [found[i] for i in request_ids if i in found]


def _view_of(row: Mapping[str, Any], *, for_support: bool = False) -> dict:
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
        "batch_id": str(row["batch_id"]) if row["batch_id"] else None,
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
    service: str | None = None,
) -> list[uuid.UUID]:
    """Ids of the requests `nic` is a party of (of `service` only, when named), newest first
    (keyset pagination)."""
    roles = [role] if role else ["requester", "from", "to"]
    column = {"requester": "requester", "from": "from_nic", "to": "to_nic"}
    mine = "($2::text IS NULL OR state = $2) AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))"
    if service is None:
        # One indexed branch per role, merged: no scan that grows with everybody's history.
        branches = " UNION ".join(f"SELECT id, created_at FROM contact_changes WHERE {column[r]} = $1 AND {mine}" for r in roles)
    else:  # the service's own index: however many requests the account has elsewhere
        parties = " OR ".join(f"{column[r]} = $1" for r in roles)
        branches = f"SELECT id, created_at FROM contact_changes WHERE service = $6 AND ({parties}) AND {mine}"
    rows = await conn.fetch(
        f"SELECT id, created_at FROM ({branches}) AS mine ORDER BY created_at DESC, id DESC LIMIT $5",
        nic,
        state,
        before[0] if before else None,
        before[1] if before else None,
        limit,
        *([service] if service is not None else []),
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

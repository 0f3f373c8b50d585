"""SQL of the requests service: replicas of accounts and services, requests, confirmers, history.

Every function takes a connection so the caller decides the transaction; all SQL is
parameterised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from contacts_shared.contracts import ContactType, Envelope, RequestState
from contacts_shared.db import IF_CLAIMED, claim_cte
from contacts_shared.observability import FLOW_SECONDS

from contacts_requests.domain import (
    FINAL_STATES,
    OPEN_STATES,
    WAITING_FOR_VETTING,
    Account,
    ContactChange,
    ServiceContacts,
    TokenSlot,
)

MIGRATIONS = [
    """
    CREATE TABLE accounts (
        nic   text PRIMARY KEY,
        email text NOT NULL,
        zone  text NOT NULL
    );
    CREATE TABLE services (
        service text PRIMARY KEY,
        type    text NOT NULL,
        admin   text NOT NULL,
        tech    text NOT NULL,
        billing text NOT NULL
    );
    CREATE INDEX services_admin ON services (admin);
    CREATE INDEX services_tech ON services (tech);
    CREATE INDEX services_billing ON services (billing);

    CREATE TABLE contact_changes (
        id              uuid PRIMARY KEY,
        service         text NOT NULL,
        type            text NOT NULL,
        from_nic        text NOT NULL,
        to_nic          text NOT NULL,
        requester       text NOT NULL,
        state           text NOT NULL,
        reason          text,
        created_at      timestamptz NOT NULL DEFAULT now(),
        updated_at      timestamptz NOT NULL DEFAULT now(),
        expires_at      timestamptz NOT NULL,
        tokens_reset_at timestamptz NOT NULL DEFAULT now()
    );
    -- At most one open request per service and type, enforced where races cannot slip through.
    CREATE UNIQUE INDEX contact_changes_one_open ON contact_changes (service, type)
        WHERE state IN ('checking', 'validating', 'applying');
    CREATE INDEX contact_changes_requester ON contact_changes (requester, created_at DESC);
    CREATE INDEX contact_changes_from ON contact_changes (from_nic, created_at DESC);
    CREATE INDEX contact_changes_to ON contact_changes (to_nic, created_at DESC);
    CREATE INDEX contact_changes_expiring ON contact_changes (expires_at) WHERE state = 'validating';

    CREATE TABLE confirmers (
        request_id       uuid NOT NULL REFERENCES contact_changes (id),
        nic              text NOT NULL,
        state            text NOT NULL DEFAULT 'pending',
        token_hash       text,
        token_expires_at timestamptz,
        token_issued_at  timestamptz,
        failures         int NOT NULL DEFAULT 0,
        answered_at      timestamptz,
        PRIMARY KEY (request_id, nic)
    );

    CREATE TABLE history (
        id         bigserial PRIMARY KEY,
        request_id uuid NOT NULL REFERENCES contact_changes (id),
        at         timestamptz NOT NULL DEFAULT now(),
        state      text NOT NULL,
        actor      text NOT NULL,
        reason     text
    );
    CREATE INDEX history_request ON history (request_id, id);

    -- Idempotency keys of submissions (HTTP header or contact_change.submit), per requester.
    CREATE TABLE submissions (
        requester       text NOT NULL,
        idempotency_key text NOT NULL,
        request_ids     uuid[] NOT NULL,
        created_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (requester, idempotency_key)
    );
    """,
    # Replicas never go back in time: each row keeps the version of the message that last wrote
    # it (`occurred_at`, `message_id`), and a delete leaves a tombstone (`deleted`, its data
    # erased) that an older upsert cannot revive. `accounts` and `services` become views of the
    # live rows, so every read, here or anywhere, keeps ignoring deleted ones; writes go to the
    # tables (the views stay updatable for a process of the previous release during an upgrade).
    """
    ALTER TABLE accounts RENAME TO account_rows;
    ALTER TABLE account_rows
        ALTER COLUMN email DROP NOT NULL,
        ALTER COLUMN zone DROP NOT NULL,
        ADD COLUMN occurred_at timestamptz,
        ADD COLUMN message_id uuid,
        ADD COLUMN deleted boolean NOT NULL DEFAULT false;
    CREATE VIEW accounts AS SELECT nic, email, zone FROM account_rows WHERE NOT deleted;

    ALTER TABLE services RENAME TO service_rows;
    ALTER TABLE service_rows
        ALTER COLUMN type DROP NOT NULL,
        ALTER COLUMN admin DROP NOT NULL,
        ALTER COLUMN tech DROP NOT NULL,
        ALTER COLUMN billing DROP NOT NULL,
        ADD COLUMN occurred_at timestamptz,
        ADD COLUMN message_id uuid,
        ADD COLUMN deleted boolean NOT NULL DEFAULT false;
    CREATE VIEW services AS SELECT service, type, admin, tech, billing FROM service_rows WHERE NOT deleted;
    """,
    # When the billing check was last asked about a request waiting for its verdict; the open
    # requests by expiry (every open state now expires), those awaiting a verdict by last change.
    # Partial indexes: the periodic jobs read only what is open, however long the history.
    """
    ALTER TABLE contact_changes ADD COLUMN vetting_asked_at timestamptz;
    DROP INDEX contact_changes_expiring;
    CREATE INDEX contact_changes_open_expiring ON contact_changes (expires_at)
        WHERE state IN ('applying', 'checking', 'validating');
    CREATE INDEX contact_changes_awaiting_vetting ON contact_changes (updated_at)
        WHERE state IN ('applying', 'checking');
    """,
    # The round of validation codes each confirmer waits for (1, one more per resend): a
    # `token_issued` counts only for the current round, whatever the clocks of the two hosts say.
    # (tokens_reset_at and token_issued_at, which compared them, are left to a process of the
    # previous release during an upgrade; nothing reads them now.)
    """
    ALTER TABLE confirmers ADD COLUMN generation int NOT NULL DEFAULT 1;
    """,
    # Resends per request and when the last one was (rate_limits: at most one a minute, five
    # in all).
    """
    ALTER TABLE contact_changes
        ADD COLUMN resends int NOT NULL DEFAULT 0,
        ADD COLUMN last_resend_at timestamptz;
    """,
]


# --- replicas ---------------------------------------------------------------------------------


# Replica rows are written in the order of their messages' `occurred_at`, whatever the order
# they arrive in: a message applies only when its version is newer than the row's. Versions
# compare as (occurred_at, deleted, message_id): at the same instant a delete wins over an
# upsert, and between two upserts (or two deletes) the greater message_id, so every delivery
# order ends in the same state (docs/decisions.md). A row written before versions existed
# (NULL) yields to any message.


def _newer(table: str) -> str:
    """SQL (in an `ON CONFLICT DO UPDATE ... WHERE`): the message being inserted is newer than
    the row of `table` it conflicts with."""
    return (
        f"({table}.occurred_at IS NULL OR ({table}.occurred_at, {table}.deleted, {table}.message_id)"
        " < (EXCLUDED.occurred_at, EXCLUDED.deleted, EXCLUDED.message_id))"
    )


async def upsert_account(conn: asyncpg.Connection, envelope: Envelope, nic: str, email: str, zone: str) -> bool:
    """Apply an `account.upserted`; False when a newer message (upsert or delete) was applied."""
    return bool(
        await conn.fetchval(
            "INSERT INTO account_rows AS a (nic, email, zone, occurred_at, message_id) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (nic) DO UPDATE SET email = EXCLUDED.email, zone = EXCLUDED.zone,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id, deleted = false"
            f" WHERE {_newer('a')} RETURNING true",
            nic,
            email,
            zone,
            envelope.occurred_at,
            envelope.message_id,
        )
    )


async def delete_account(conn: asyncpg.Connection, envelope: Envelope, nic: str) -> bool:
    """Apply an `account.deleted`: a tombstone (email and zone erased), also for an account not
    seen yet, so that its older upsert arriving later is ignored. False when a newer message was
    applied."""
    return bool(
        await conn.fetchval(
            "INSERT INTO account_rows AS a (nic, occurred_at, message_id, deleted) VALUES ($1, $2, $3, true)"
            " ON CONFLICT (nic) DO UPDATE SET email = NULL, zone = NULL,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id, deleted = true"
            f" WHERE {_newer('a')} RETURNING true",
            nic,
            envelope.occurred_at,
            envelope.message_id,
        )
    )


def _accounts_of(nics: str) -> str:
    """SQL: the array of the accounts of the NICs in the array `nics` (a NULL for an unknown one),
    one primary-key lookup each whatever the table's size (as `nic = ANY(...)`, a generic plan
    read the whole table while it was small)."""
    return f"ARRAY(SELECT (SELECT ROW(a.nic, a.email, a.zone) FROM accounts a WHERE a.nic = n.nic) FROM unnest({nics}) AS n(nic))"


def _accounts(rows: list[tuple[str, str, str] | None]) -> dict[str, Account]:
    return {nic: Account(nic, email, zone) for nic, email, zone in filter(None, rows)}


async def accounts_by_nic(conn: asyncpg.Connection, nics: list[str]) -> dict[str, Account]:
    return _accounts(await conn.fetchval(f"SELECT {_accounts_of('$1::text[]')}", nics))


async def insert_service_if_new(
    conn: asyncpg.Connection, envelope: Envelope, service: str, type_: str, admin: str, tech: str, billing: str
) -> bool:
    """Apply a `service.upserted`; False when a newer message (upsert or delete) was applied.

    Contacts are taken only at creation (a service unknown, or deleted and now created again);
    later upserts update the type alone: the contacts are this service's to change."""
    return bool(
        await conn.fetchval(
            "INSERT INTO service_rows AS s (service, type, admin, tech, billing, occurred_at, message_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (service) DO UPDATE SET type = EXCLUDED.type,"
            " admin = CASE WHEN s.deleted THEN EXCLUDED.admin ELSE s.admin END,"
            " tech = CASE WHEN s.deleted THEN EXCLUDED.tech ELSE s.tech END,"
            " billing = CASE WHEN s.deleted THEN EXCLUDED.billing ELSE s.billing END,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id, deleted = false"
            f" WHERE {_newer('s')} RETURNING true",
            service,
            type_,
            admin,
            tech,
            billing,
            envelope.occurred_at,
            envelope.message_id,
        )
    )


async def delete_service(conn: asyncpg.Connection, envelope: Envelope, service: str) -> bool:
    """Apply a `service.deleted`: a tombstone (type and contacts erased), also for a service not
    seen yet. False when a newer message was applied."""
    return bool(
        await conn.fetchval(
            "INSERT INTO service_rows AS s (service, occurred_at, message_id, deleted) VALUES ($1, $2, $3, true)"
            " ON CONFLICT (service) DO UPDATE SET type = NULL, admin = NULL, tech = NULL, billing = NULL,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id, deleted = true"
            f" WHERE {_newer('s')} RETURNING true",
            service,
            envelope.occurred_at,
            envelope.message_id,
        )
    )


def _service(row: asyncpg.Record) -> ServiceContacts:
    return ServiceContacts(row["service"], row["admin"], row["tech"], row["billing"])


async def get_service(conn: asyncpg.Connection, service: str, *, for_update: bool = False) -> ServiceContacts | None:
    sql = "SELECT service, admin, tech, billing FROM services WHERE service = $1"
    row = await conn.fetchrow(sql + (" FOR UPDATE" if for_update else ""), service)
    return _service(row) if row else None


async def services_of(conn: asyncpg.Connection, nic: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT service, type, admin, tech, billing FROM services"
        " WHERE admin = $1 OR tech = $1 OR billing = $1 ORDER BY service",
        nic,
    )


async def set_contact(conn: asyncpg.Connection, service: str, ctype: ContactType, nic: str) -> None:
    column = {"admin": "admin", "tech": "tech", "billing": "billing"}[ctype.value]  # never user text in SQL
    await conn.execute(f"UPDATE services SET {column} = $2 WHERE service = $1", service, nic)


# --- requests -----------------------------------------------------------------------------------


async def open_requests_for(conn: asyncpg.Connection, service: str) -> dict[ContactType, str]:
    rows = await conn.fetch(
        f"SELECT type, id FROM contact_changes WHERE service = $1 AND {_state_in(OPEN_STATES)}",
        service,
    )
    return {ContactType(r["type"]): str(r["id"]) for r in rows}


@dataclass(frozen=True)
class SubmissionContext:
    """What a submission is judged on: the service, accounts, and the service's open requests."""

    service: ServiceContacts | None
    accounts: dict[str, Account]
    open_requests: dict[ContactType, str]


async def submission_context(conn: asyncpg.Connection, service: str, nics: list[str]) -> SubmissionContext:
    """The service, the accounts of `nics` and of the service's current contacts (the parties
    its announcements name), and its open requests by type, in one statement (one round trip
    per submission)."""
    row = await conn.fetchrow(
        "SELECT (SELECT ROW(s.service, s.admin, s.tech, s.billing) FROM services s WHERE s.service = $1) AS service,"
        f" {_accounts_of('$2::text[] || (SELECT ARRAY[s.admin, s.tech, s.billing] FROM services s WHERE s.service = $1)')}"
        " AS accounts,"
        " ARRAY(SELECT ROW(r.type, r.id) FROM contact_changes r"
        f" WHERE r.service = $1 AND r.{_state_in(OPEN_STATES)}) AS open_requests",
        service,
        nics,
    )
    return SubmissionContext(
        service=ServiceContacts(*row["service"]) if row["service"] else None,
        accounts=_accounts(row["accounts"]),
        open_requests={ContactType(ctype): str(request_id) for ctype, request_id in row["open_requests"]},
    )


async def insert_request(
    conn: asyncpg.Connection,
    *,
    request_id: uuid.UUID,
    service: str,
    ctype: ContactType,
    from_: str,
    to: str,
    requester: str,
    confirmers: tuple[str, ...],
    expires_at: datetime,
) -> None:
    """The request, its confirmers and its first history line, in one statement."""
    await conn.execute(
        "WITH request AS (INSERT INTO contact_changes (id, service, type, from_nic, to_nic, requester, state, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'checking', $7)),"
        " asked AS (INSERT INTO confirmers (request_id, nic) SELECT $1, unnest($8::text[]))"
        " INSERT INTO history (request_id, state, actor, reason) VALUES ($1, 'checking', $6, 'submitted')",
        request_id,
        service,
        ctype.value,
        from_,
        to,
        requester,
        expires_at,
        list(confirmers),
    )


async def record_history(
    conn: asyncpg.Connection, request_id: uuid.UUID, state: RequestState, actor: str, reason: str | None
) -> None:
    await conn.execute(
        "INSERT INTO history (request_id, state, actor, reason) VALUES ($1, $2, $3, $4)",
        request_id,
        state.value,
        actor,
        reason,
    )


@dataclass(frozen=True)
class LoadedChange:
    """A request as loaded for a use case, with what its use cases need beside the state machine."""

    change: ContactChange
    # The accounts of its requester, previous and new contact (its confirmers are among them).
    accounts: dict[str, Account]
    # Each confirmer's token, as far as this service knows it (its hash).
    slots: dict[str, TokenSlot]


async def load_change(conn: asyncpg.Connection, request_id: uuid.UUID, *, for_update: bool = False) -> ContactChange | None:
    loaded = await load(conn, request_id, for_update=for_update)
    return loaded.change if loaded else None


_REQUEST = (
    "SELECT r.id, r.service, r.type, r.from_nic, r.to_nic, r.requester, r.state, r.expires_at,"
    f" {_accounts_of('ARRAY[r.requester, r.from_nic, r.to_nic]')} AS accounts"
)
_CONFIRMER = "c.nic, c.state, c.token_hash, c.token_expires_at, c.failures"


async def load(
    conn: asyncpg.Connection, request_id: uuid.UUID, *, for_update: bool = False, confirmer_states: bool = True
) -> LoadedChange | None:
    """The request (locked `for_update`: that serialises every writer of one request, answers
    racing and the like), its parties' accounts and its confirmers.

    The confirmers are read in a statement of their own, after the lock: its snapshot then sees
    what the previous holder of the lock committed (read with the lock in one statement, they
    would be as they were before the wait, and two answers at once would each see the other
    pending). A use case that reads none of their states (`confirmer_states=False`: vetting,
    which needs only who they are, and that never changes) reads them in the same statement,
    a round trip less."""
    lock = " FOR UPDATE OF r" if for_update else ""
    if confirmer_states:
        row = await conn.fetchrow(_REQUEST + " FROM contact_changes r WHERE r.id = $1" + lock, request_id)
        if row is None:
            return None
        confirmers = [
            tuple(c)
            for c in await conn.fetch(f"SELECT {_CONFIRMER} FROM confirmers c WHERE c.request_id = $1 ORDER BY c.nic", request_id)
        ]
    else:
        row = await conn.fetchrow(
            f"{_REQUEST}, ARRAY(SELECT ROW({_CONFIRMER}) FROM confirmers c WHERE c.request_id = r.id ORDER BY c.nic)"
            " AS confirmers FROM contact_changes r WHERE r.id = $1" + lock,
            request_id,
        )
        if row is None:
            return None
        confirmers = list(row["confirmers"])
    change = ContactChange(
        id=str(row["id"]),
        service=row["service"],
        type=ContactType(row["type"]),
        from_=row["from_nic"],
        to=row["to_nic"],
        requester=row["requester"],
        state=RequestState(row["state"]),
        confirmers={nic: state for nic, state, *_ in confirmers},
        expires_at=row["expires_at"],
    )
    return LoadedChange(
        change=change,
        accounts=_accounts(row["accounts"]),
        slots={nic: TokenSlot(token_hash, expires_at, failures) for nic, _, token_hash, expires_at, failures in confirmers},
    )


async def set_state(
    conn: asyncpg.Connection, request_id: uuid.UUID, state: RequestState, actor: str, reason: str | None
) -> None:
    # The new state and its history line in one statement (a round trip per transition).
    flow_seconds = await conn.fetchval(
        "WITH recorded AS (INSERT INTO history (request_id, state, actor, reason) VALUES ($1, $2, $4, $3))"
        " UPDATE contact_changes SET state = $2, reason = $3, updated_at = now() WHERE id = $1"
        " RETURNING extract(epoch FROM now() - created_at)::float8",
        request_id,
        state.value,
        reason,
        actor,
    )
    if state in FINAL_STATES and flow_seconds is not None:
        # Observed before the commit: a transaction retried after a failure may count twice.
        FLOW_SECONDS.labels(state.value).observe(flow_seconds)


async def open_requests_by_state(conn: asyncpg.Connection) -> dict[str, int]:
    """Open requests per state, read through the partial index of open ones: a scrape costs what
    is open (at most one per service and type), never the whole history."""
    rows = await conn.fetch(
        f"SELECT state, count(*) AS n FROM contact_changes WHERE {_state_in(OPEN_STATES)} GROUP BY state"
    )
    return {r["state"]: r["n"] for r in rows}


_VIEW_CONFIRMER = ("nic", "state", "answered_at")
_VIEW_HISTORY = ("at", "state", "actor", "reason")


async def request_view(conn: asyncpg.Connection, request_id: uuid.UUID) -> dict | None:
    # One statement, since every API write answers with this view: confirmers and history as
    # arrays of rows, which keep their column types.
    row = await conn.fetchrow(
        "SELECT r.*,"
        " ARRAY(SELECT ROW(c.nic, c.state, c.answered_at) FROM confirmers c WHERE c.request_id = r.id ORDER BY c.nic) AS confirmers,"
        " ARRAY(SELECT ROW(h.at, h.state, h.actor, h.reason) FROM history h WHERE h.request_id = r.id ORDER BY h.id) AS history"
        " FROM contact_changes r WHERE r.id = $1",
        request_id,
    )
    if row is None:
        return None
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
        "confirmers": [dict(zip(_VIEW_CONFIRMER, c, strict=True)) for c in row["confirmers"]],
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


# --- confirmers and tokens ----------------------------------------------------------------------


async def count_token_failure(conn: asyncpg.Connection, request_id: uuid.UUID, nic: str) -> None:
    await conn.execute(
        "UPDATE confirmers SET failures = failures + 1 WHERE request_id = $1 AND nic = $2", request_id, nic
    )


async def record_answer(
    conn: asyncpg.Connection, request_id: uuid.UUID, nic: str, state: str, request_state: RequestState, reason: str
) -> None:
    """The confirmer's answer, and its line in the request's history (one statement)."""
    # The token is spent: clearing the hash makes it single use.
    await conn.execute(
        "WITH recorded AS (INSERT INTO history (request_id, state, actor, reason) VALUES ($1, $4, $2, $5))"
        " UPDATE confirmers SET state = $3, answered_at = now(), token_hash = NULL"
        " WHERE request_id = $1 AND nic = $2",
        request_id,
        nic,
        state,
        request_state.value,
        reason,
    )


async def claim_and_store_token_hash(
    conn: asyncpg.Connection,
    envelope: Envelope,
    request_id: uuid.UUID,
    nic: str,
    token_hash: str,
    expires_at: datetime,
    generation: int,
) -> bool:
    """Claim the `token_issued` message and keep its token's hash, in one statement (a
    `ClaimsItself` handler's); False if the message was claimed before."""
    # Only a code of the round the confirmer waits for counts: one from before a resend is
    # stale even if its message arrives late. The same code announced again (its email was
    # written again) keeps the failures counted against it.
    return bool(
        await conn.fetchval(
            f"WITH {claim_cte('$1', '$2')},"
            " stored AS (UPDATE confirmers c SET token_hash = $5, token_expires_at = $6,"
            " failures = CASE WHEN c.token_hash = $5 THEN c.failures ELSE 0 END"
            " FROM contact_changes r"
            " WHERE c.request_id = $3 AND c.nic = $4 AND r.id = c.request_id"
            f" AND c.state = 'pending' AND r.state = 'validating' AND c.generation = $7 AND {IF_CLAIMED})"
            " SELECT true FROM claimed",
            envelope.message_id,
            envelope.type,
            request_id,
            nic,
            token_hash,
            expires_at,
            generation,
        )
    )


async def new_round_of_codes(conn: asyncpg.Connection, request_id: uuid.UUID, nics: list[str]) -> dict[str, int]:
    """Resend: the confirmers' codes stop working now, before the new ones are issued; returns
    the round each of `nics` now waits for."""
    rows = await conn.fetch(
        "UPDATE confirmers SET generation = generation + 1, token_hash = NULL, token_expires_at = NULL, failures = 0"
        " WHERE request_id = $1 AND nic = ANY($2::text[]) RETURNING nic, generation",
        request_id,
        nics,
    )
    return {row["nic"]: row["generation"] for row in rows}


def _state_in(states: frozenset[RequestState]) -> str:
    # Written out, not a parameter: the planner matches it to the partial indexes above (the
    # values are the domain's own, never input).
    return "state IN (" + ", ".join(f"'{state.value}'" for state in sorted(states)) + ")"


async def expired_request_ids(conn: asyncpg.Connection, limit: int = 500) -> list[uuid.UUID]:
    """Open requests whose time ran out, locked (replicas take others)."""
    rows = await conn.fetch(
        f"SELECT id FROM contact_changes WHERE {_state_in(OPEN_STATES)} AND expires_at <= now()"
        " ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [r["id"] for r in rows]


async def unvetted_request_ids(conn: asyncpg.Connection, waited: timedelta, limit: int = 500) -> list[uuid.UUID]:
    """Requests waiting for the billing check's verdict for longer than `waited` since they
    entered that state or it was last asked, locked (replicas take others)."""
    rows = await conn.fetch(
        f"SELECT id FROM contact_changes WHERE {_state_in(WAITING_FOR_VETTING)}"
        " AND updated_at <= now() - $2::interval"
        " AND (vetting_asked_at IS NULL OR vetting_asked_at <= now() - $2::interval)"
        " ORDER BY updated_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
        waited,
    )
    return [r["id"] for r in rows]


async def mark_vetting_asked(conn: asyncpg.Connection, request_id: uuid.UUID, state: RequestState) -> None:
    """Remember the billing check was asked again, with a line in the request's history."""
    await conn.execute(
        "WITH recorded AS (INSERT INTO history (request_id, state, actor, reason)"
        " VALUES ($1, $2, 'system', 'the billing check was asked again'))"
        " UPDATE contact_changes SET vetting_asked_at = now() WHERE id = $1",
        request_id,
        state.value,
    )


# --- idempotency ----------------------------------------------------------------------------------


async def submission_by_key(conn: asyncpg.Connection, requester: str, key: str) -> list[uuid.UUID] | None:
    return await conn.fetchval(
        "SELECT request_ids FROM submissions WHERE requester = $1 AND idempotency_key = $2", requester, key
    )


async def reasons_of(conn: asyncpg.Connection, request_ids: list[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """The reason each request was given for its current state."""
    rows = await conn.fetch("SELECT id, reason FROM contact_changes WHERE id = ANY($1::uuid[])", request_ids)
    return {r["id"]: r["reason"] for r in rows}


async def record_submission(conn: asyncpg.Connection, requester: str, key: str, request_ids: list[uuid.UUID]) -> bool:
    """False when the key was taken meanwhile (a concurrent duplicate)."""
    row = await conn.fetchval(
        "INSERT INTO submissions (requester, idempotency_key, request_ids) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        requester,
        key,
        request_ids,
    )
    return row is not None


# --- rate limits ----------------------------------------------------------------------------------


async def resend_record(conn: asyncpg.Connection, request_id: uuid.UUID) -> asyncpg.Record:
    """How often the request's codes were sent again, and when last (`resends`, `last_resend_at`)."""
    return await conn.fetchrow("SELECT resends, last_resend_at FROM contact_changes WHERE id = $1", request_id)


async def count_resend(conn: asyncpg.Connection, request_id: uuid.UUID, at: datetime) -> None:
    await conn.execute("UPDATE contact_changes SET resends = resends + 1, last_resend_at = $2 WHERE id = $1", request_id, at)


async def recent_submissions(conn: asyncpg.Connection, requester: str, since: datetime) -> list[datetime]:
    """When the requester's submissions since `since` were made, after taking the requester's
    submission lock (held to the end of the transaction: two replicas cannot both let the 31st
    in). The requests of one submission share their `created_at`."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('submit:' || $1))", requester)
    rows = await conn.fetch(
        "SELECT DISTINCT created_at FROM contact_changes WHERE requester = $1 AND created_at > $2", requester, since
    )
    return [r["created_at"] for r in rows]

"""SQL of the requests service's requests: their confirmers and tokens, and history
(submissions.py has the idempotency keys and rate-limit counts, replicas.py the accounts and
services, views.py what is shown).

Every function takes a connection so the caller decides the transaction; all SQL is
parameterised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
from contacts_shared.contracts import ContactType, Envelope, RequestState
from contacts_shared.db import IF_CLAIMED, claim_cte
from contacts_shared.statement import NOW, Sql, Statement

from contacts_requests.contact_change import ContactChange
from contacts_requests.domain import (
    OPEN_STATES,
    WAITING_FOR_VETTING,
    Account,
    ServiceContacts,
)
from contacts_requests.replicas import accounts_from, accounts_sql
from contacts_requests.tokens import TokenSlot
from contacts_requests.views import change_of

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
        f" {accounts_sql('$2::text[] || (SELECT ARRAY[s.admin, s.tech, s.billing] FROM services s WHERE s.service = $1)')}"
        " AS accounts,"
        " ARRAY(SELECT ROW(r.type, r.id) FROM contact_changes r"
        f" WHERE r.service = $1 AND r.{_state_in(OPEN_STATES)}) AS open_requests",
        service,
        nics,
    )
    return SubmissionContext(
        service=ServiceContacts(*row["service"]) if row["service"] else None,
        accounts=accounts_from(row["accounts"]),
        open_requests={ContactType(ctype): str(request_id) for ctype, request_id in row["open_requests"]},
    )


@dataclass
class Changes(Statement):
    """What a unit of work writes to requests, their confirmers and history, gathered into one
    statement (`contacts_shared.statement`: one round trip). History lines go in one INSERT, in
    the order recorded: their ids order a request's history."""

    _history: list[tuple[uuid.UUID, str, str, str | None]] = field(default_factory=list)

    def insert_request(self, change: ContactChange) -> Changes:
        """The request, its confirmers and its first history line."""
        request_id = uuid.UUID(change.id)
        self.add(
            "INSERT INTO contact_changes (id, service, type, from_nic, to_nic, requester, state, expires_at, batch_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'checking', $7, $8)",
            request_id,
            change.service,
            change.type.value,
            change.from_,
            change.to,
            change.requester,
            change.expires_at,
            uuid.UUID(change.batch_id) if change.batch_id else None,
        )
        self.add("INSERT INTO confirmers (request_id, nic) SELECT $1, unnest($2::text[])", request_id, list(change.confirmers))
        return self.history(request_id, RequestState.checking, change.requester, "submitted")

    def history(self, request_id: uuid.UUID, state: RequestState, actor: str, reason: str | None) -> Changes:
        self._history.append((request_id, state.value, actor, reason))
        return self

    def set_state(self, request_id: uuid.UUID, state: RequestState, actor: str, reason: str | None) -> Changes:
        """The new state and its history line."""
        self.update("contact_changes", {"id": request_id}, state=state.value, reason=reason, updated_at=NOW)
        return self.history(request_id, state, actor, reason)

    def record_answer(self, request_id: uuid.UUID, nic: str, state: str, request_state: RequestState, reason: str) -> Changes:
        """The confirmer's answer, and its line in the request's history. The token is spent:
        clearing the hash makes it single use."""
        self.update("confirmers", {"request_id": request_id, "nic": nic}, state=state, answered_at=NOW, token_hash=None)
        return self.history(request_id, request_state, nic, reason)

    def count_token_failure(self, request_id: uuid.UUID, nic: str) -> Changes:
        return self.update("confirmers", {"request_id": request_id, "nic": nic}, failures=Sql("failures + 1"))

    def unlock_code(self, request_id: uuid.UUID, nic: str) -> Changes:
        """The confirmer's code works again: its wrong tries are forgotten."""
        return self.update("confirmers", {"request_id": request_id, "nic": nic}, failures=0)

    def plan_reminder(self, request_id: uuid.UUID, sent: int, at: datetime | None) -> Changes:
        return self.update("contact_changes", {"id": request_id}, reminders=sent, next_reminder_at=at)

    def mark_vetting_asked(self, request_id: uuid.UUID, state: RequestState) -> Changes:
        """Remember the billing check was asked again, with a line in the request's history."""
        self.update("contact_changes", {"id": request_id}, vetting_asked_at=NOW)
        return self.history(request_id, state, "system", "the billing check was asked again")

    @property
    def empty(self) -> bool:
        return super().empty and not self._history

    async def run(self, conn: asyncpg.Connection) -> bool:
        if self._history:
            self.add(
                "INSERT INTO history (request_id, state, actor, reason)"
                " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])",
                *(list(column) for column in zip(*self._history, strict=True)),
            )
            self._history.clear()
        return await super().run(conn)


@dataclass(frozen=True)
class LoadedChange:
    """A request as loaded for a use case, with what its use cases need beside the state machine."""

    change: ContactChange
    # The accounts of its requester, previous and new contact (its confirmers are among them).
    accounts: dict[str, Account]
    # Each confirmer's token, as far as this service knows it (its hash).
    slots: dict[str, TokenSlot]
    # The service's contacts (loaded `with_service`), None if it is not known.
    service: ServiceContacts | None = None


def _request(party_nics: str) -> str:
    """The request's columns and the accounts of `party_nics` (an SQL array of NICs)."""
    # `from` and `to` as the request's view names them, so that one function reads both (views.change_of).
    return (
        'SELECT r.id, r.service, r.type, r.from_nic AS "from", r.to_nic AS "to", r.requester, r.state, r.expires_at,'
        f" r.created_at, r.reminders, r.batch_id, {accounts_sql(party_nics)} AS accounts"
    )


_REQUEST = _request("ARRAY[r.requester, r.from_nic, r.to_nic]")
# The request with its service's contacts, and the account of the service's admin among the others.
_REQUEST_AND_SERVICE = (
    _request("ARRAY[r.requester, r.from_nic, r.to_nic, (SELECT s.admin FROM services s WHERE s.service = r.service)]")
    + ", (SELECT ROW(s.service, s.admin, s.tech, s.billing) FROM services s WHERE s.service = r.service) AS service_contacts"
)
_CONFIRMER_COLUMNS = ("nic", "state", "token_hash", "token_expires_at", "failures")
_CONFIRMER = ", ".join(f"c.{column}" for column in _CONFIRMER_COLUMNS)
# The same, one confirmer a row beside the request's columns.
_CONFIRMER_ROW = ", ".join(f"c.{column} AS confirmer_{column}" for column in _CONFIRMER_COLUMNS)


async def load(
    conn: asyncpg.Connection, request_id: uuid.UUID, *, for_update: bool = False, confirmer_states: bool = True, with_service: bool = False
) -> LoadedChange | None:
    """The request (locked `for_update`: that serialises every writer of one request, answers
    racing and the like), its parties' accounts and its confirmers, in one statement.

    A use case that reads their states (`confirmer_states`: answers, cancel, resend) reads the
    request joined to its confirmers, one row each, and locks the confirmers' rows with the
    request's: a row locked after a wait is read as the holder of the lock left it, so two answers
    at once see each other's (an unlocked read of the confirmers in the same statement would see
    them as they were before the wait, each answer the other still pending). A use case that
    reads none of their states (vetting, which needs only who they are, and that never changes)
    reads them as an array beside the request; so does one that reads its service's contacts
    unlocked (`with_service`), with the account of the service's admin among the accounts."""
    request = _REQUEST_AND_SERVICE if with_service else _REQUEST
    if confirmer_states:
        # Every request has its requester among its confirmers: the join finds it if it exists.
        rows = await conn.fetch(
            f"{request}, {_CONFIRMER_ROW}"
            " FROM contact_changes r JOIN confirmers c ON c.request_id = r.id WHERE r.id = $1 ORDER BY c.nic"
            + (" FOR UPDATE OF r, c" if for_update else ""),
            request_id,
        )
        if not rows:
            return None
        row = rows[0]
        confirmers = [tuple(r[f"confirmer_{column}"] for column in _CONFIRMER_COLUMNS) for r in rows]
    else:
        row = await conn.fetchrow(
            f"{request}, ARRAY(SELECT ROW({_CONFIRMER}) FROM confirmers c WHERE c.request_id = r.id ORDER BY c.nic)"
            " AS confirmers FROM contact_changes r WHERE r.id = $1" + (" FOR UPDATE OF r" if for_update else ""),
            request_id,
        )
        if row is None:
            return None
        confirmers = list(row["confirmers"])
    change = change_of(row, {nic: state for nic, state, *_ in confirmers})
    return LoadedChange(
        change=change,
        accounts=accounts_from(row["accounts"]),
        slots={nic: TokenSlot(token_hash, expires_at, failures) for nic, _, token_hash, expires_at, failures in confirmers},
        service=ServiceContacts(*row["service_contacts"]) if with_service and row["service_contacts"] else None,
    )


async def open_requests_by_state(conn: asyncpg.Connection) -> dict[str, int]:
    """Open requests per state, read through the partial index of open ones: a scrape costs what
    is open (at most one per service and type), never the whole history."""
    rows = await conn.fetch(
        f"SELECT state, count(*) AS n FROM contact_changes WHERE {_state_in(OPEN_STATES)} GROUP BY state"
    )
    return {r["state"]: r["n"] for r in rows}


# --- confirmers and tokens ----------------------------------------------------------------------


async def claim_and_store_token_hash(
    conn: asyncpg.Connection,
    envelope: Envelope,
    request_id: uuid.UUID,
    nic: str,
    token_hash: str,
    expires_at: datetime,
    generation: int,
    sent_to: str | None,
) -> bool:
    """Claim the `token_issued` message and keep its token's hash, where it was mailed and when
    (the latest announcement: one per attempt to send), in one statement (a handler that claims
    itself); False if the message was claimed before."""
    # Only a code of the round the confirmer waits for counts: one from before a resend is
    # stale even if its message arrives late. The same code announced again (its email was
    # written again) keeps the failures counted against it.
    return bool(
        await conn.fetchval(
            f"WITH {claim_cte('$1', '$2')},"
            " stored AS (UPDATE confirmers c SET token_hash = $5, token_expires_at = $6,"
            " failures = CASE WHEN c.token_hash = $5 THEN c.failures ELSE 0 END,"
            " sent_to = coalesce($8, c.sent_to), sent_at = greatest(c.sent_at, $9)"
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
            sent_to,
            envelope.occurred_at,
        )
    )


async def new_round_of_codes(conn: asyncpg.Connection, request_id: uuid.UUID, nics: list[str]) -> dict[str, int]:
    """Resend: the confirmers' codes stop working now, before the new ones are issued; returns
    the round each of `nics` now waits for."""
    rows = await conn.fetch(
        "UPDATE confirmers SET generation = generation + 1, token_hash = NULL, token_expires_at = NULL, failures = 0,"
        " sent_to = NULL, sent_at = NULL"
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


async def reminder_due_ids(conn: asyncpg.Connection, limit: int = 500) -> list[uuid.UUID]:
    """Requests waiting for confirmers whose next reminder is due, locked (replicas take others)."""
    rows = await conn.fetch(
        "SELECT id FROM contact_changes WHERE state = 'validating' AND next_reminder_at <= now()"
        " ORDER BY next_reminder_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [r["id"] for r in rows]


async def reasons_of(conn: asyncpg.Connection, request_ids: list[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """The reason each request was given for its current state."""
    rows = await conn.fetch("SELECT id, reason FROM contact_changes WHERE id = ANY($1::uuid[])", request_ids)
    return {r["id"]: r["reason"] for r in rows}

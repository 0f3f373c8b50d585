"""SQL of the replicas the requests service keeps of other systems' data: accounts and services,
with their contacts. Every function takes a connection so the caller decides the transaction."""

from __future__ import annotations

import asyncpg
from contacts_shared.contracts import ContactType, Envelope
from contacts_shared.statement import Statement

from contacts_requests.domain import Account, ServiceContacts

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


async def upsert_account(
    conn: asyncpg.Connection, envelope: Envelope, nic: str, email: str, zone: str, language: str = "en"
) -> bool:
    """Apply an `account.upserted`; False when a newer message (upsert or delete) was applied."""
    return bool(
        await conn.fetchval(
            "INSERT INTO account_rows AS a (nic, email, zone, occurred_at, message_id, language) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (nic) DO UPDATE SET email = EXCLUDED.email, zone = EXCLUDED.zone, language = EXCLUDED.language,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id, deleted = false"
            f" WHERE {_newer('a')} RETURNING true",
            nic,
            email,
            zone,
            envelope.occurred_at,
            envelope.message_id,
            language,
        )
    )


async def delete_account(conn: asyncpg.Connection, envelope: Envelope, nic: str) -> bool:
    """Apply an `account.deleted`: a tombstone (email, zone and language erased), also for an
    account not seen yet, so that its older upsert arriving later is ignored. False when a newer
    message was applied."""
    return bool(
        await conn.fetchval(
            "INSERT INTO account_rows AS a (nic, occurred_at, message_id, deleted) VALUES ($1, $2, $3, true)"
            " ON CONFLICT (nic) DO UPDATE SET email = NULL, zone = NULL, language = NULL,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id, deleted = true"
            f" WHERE {_newer('a')} RETURNING true",
            nic,
            envelope.occurred_at,
            envelope.message_id,
        )
    )


def accounts_sql(nics: str) -> str:
    """SQL: the array of the accounts of the NICs in the array `nics` (a NULL for an unknown one),
    one primary-key lookup each whatever the table's size (as `nic = ANY(...)`, a generic plan
    read the whole table while it was small)."""
    return (
        "ARRAY(SELECT (SELECT ROW(a.nic, a.email, a.zone, coalesce(a.language, 'en')) FROM accounts a WHERE a.nic = n.nic)"
        f" FROM unnest({nics}) AS n(nic))"
    )


def accounts_from(rows: list[tuple[str, str, str, str] | None]) -> dict[str, Account]:
    return {nic: Account(nic, email, zone, language) for nic, email, zone, language in filter(None, rows)}


async def accounts_by_nic(conn: asyncpg.Connection, nics: list[str]) -> dict[str, Account]:
    return accounts_from(await conn.fetchval(f"SELECT {accounts_sql('$1::text[]')}", nics))


async def language_of(conn: asyncpg.Connection, nic: str) -> str | None:
    """The language of an account (a BCP 47 tag), None when the account is not known: one
    primary-key lookup, for the pages of a signed-in person."""
    return await conn.fetchval("SELECT coalesce(language, 'en') FROM accounts WHERE nic = $1", nic)


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


def set_contact(statement: Statement, service: str, ctype: ContactType, nic: str) -> Statement:
    """The service's contact of `ctype` is `nic` now, as part of `statement`."""
    column = {"admin": "admin", "tech": "tech", "billing": "billing"}[ctype.value]  # never user text in SQL
    return statement.update("services", {"service": service}, **{column: nic})

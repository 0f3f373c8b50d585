"""SQL of what guards submissions and resends: the idempotency keys of submissions, and what the
rate limits count (a requester's recent submissions, a request's resends)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg

# --- idempotency keys -----------------------------------------------------------------------------


async def submission_by_key(conn: asyncpg.Connection, requester: str, key: str) -> list[uuid.UUID] | None:
    return await conn.fetchval(
        "SELECT request_ids FROM submissions WHERE requester = $1 AND idempotency_key = $2", requester, key
    )


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


async def batch_by_key(conn: asyncpg.Connection, requester: str, key: str) -> asyncpg.Record | None:
    """The batch a key made (`batch_id`, `request_ids`, `refused` as JSON), if it made one."""
    return await conn.fetchrow(
        "SELECT batch_id, request_ids, refused FROM submissions WHERE requester = $1 AND idempotency_key = $2 AND batch_id IS NOT NULL",
        requester,
        key,
    )


async def record_batch(
    conn: asyncpg.Connection, requester: str, key: str, batch_id: uuid.UUID, request_ids: list[uuid.UUID], refused: list[dict]
) -> None:
    await conn.execute(
        "INSERT INTO submissions (requester, idempotency_key, request_ids, batch_id, refused) VALUES ($1, $2, $3, $4, $5)",
        requester,
        key,
        request_ids,
        batch_id,
        json.dumps(refused),
    )

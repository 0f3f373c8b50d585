"""SQL of the notifier: the mail log (every email, its state and attempts) and issued tokens.

Token emails are stored without their token: it is made at send time and only its hash is
kept, so the plaintext exists nowhere but in the email.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg

MIGRATIONS = [
    """
    CREATE TABLE mails (
        id              bigserial PRIMARY KEY,
        dedupe_key      text NOT NULL UNIQUE,
        kind            text NOT NULL CHECK (kind IN ('token', 'outcome')),
        request_id      uuid NOT NULL,
        nic             text NOT NULL,
        email           text NOT NULL,
        subject         text,
        body            text,
        token_context   jsonb,
        state           text NOT NULL DEFAULT 'pending',
        attempts        int NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        last_error      text,
        created_at      timestamptz NOT NULL DEFAULT now(),
        sent_at         timestamptz
    );
    CREATE INDEX mails_due ON mails (next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX mails_request ON mails (request_id);

    CREATE TABLE tokens (
        id         bigserial PRIMARY KEY,
        request_id uuid NOT NULL,
        nic        text NOT NULL,
        token_hash text NOT NULL UNIQUE,
        expires_at timestamptz NOT NULL,
        issued_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX tokens_request ON tokens (request_id, nic);
    """,
]


# Appended to each statement that queues a mail: wakes the mailer at commit (NOTIFY), in the
# same round trip as the insert.
_WAKE_MAILER = " SELECT pg_notify(current_schema() || '_mail', '')"


async def queue_token_mail(
    conn: asyncpg.Connection, *, dedupe_key: str, request_id: uuid.UUID, nic: str, email: str, context: dict
) -> None:
    # A newer token mail (resend) makes an unsent older one pointless: its token would be stale.
    # Superseding, queueing and waking in one statement; the update sees the table as it was
    # before the statement, so never the mail queued here.
    await conn.execute(
        "WITH superseded AS (UPDATE mails SET state = 'superseded'"
        " WHERE kind = 'token' AND request_id = $2 AND nic = $3 AND state = 'pending'),"
        " queued AS (INSERT INTO mails (dedupe_key, kind, request_id, nic, email, token_context)"
        " VALUES ($1, 'token', $2, $3, $4, $5::jsonb) ON CONFLICT (dedupe_key) DO NOTHING)" + _WAKE_MAILER,
        dedupe_key,
        request_id,
        nic,
        email,
        json.dumps(context),
    )


async def queue_outcome_mail(
    conn: asyncpg.Connection, *, dedupe_key: str, request_id: uuid.UUID, nic: str, email: str, subject: str, body: str
) -> None:
    await conn.execute(
        "WITH queued AS (INSERT INTO mails (dedupe_key, kind, request_id, nic, email, subject, body)"
        " VALUES ($1, 'outcome', $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING)" + _WAKE_MAILER,
        dedupe_key,
        request_id,
        nic,
        email,
        subject,
        body,
    )


async def due_mails(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """The oldest mails due, locked for this sender (other senders and replicas skip them)."""
    return await conn.fetch(
        "SELECT * FROM mails WHERE state = 'pending' AND next_attempt_at <= now()"
        " ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )


async def record_tokens(conn: asyncpg.Connection, tokens: list[tuple[uuid.UUID, str, str, datetime]]) -> None:
    """(request_id, nic, token_hash, expires_at) of tokens just emailed."""
    await conn.executemany(
        "INSERT INTO tokens (request_id, nic, token_hash, expires_at) VALUES ($1, $2, $3, $4)", tokens
    )


async def mark_sent(conn: asyncpg.Connection, mail_ids: list[int]) -> None:
    # One row per statement, pipelined: `id = ANY($1)` was planned as a sequential scan of
    # the whole mail log while the table was young (seen with the benchmark's --auto-explain).
    await conn.executemany(
        "UPDATE mails SET state = 'sent', sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1",
        [(mail_id,) for mail_id in mail_ids],
    )


async def postpone(conn: asyncpg.Connection, mail_id: int, delay_seconds: float, error: str) -> None:
    await conn.execute(
        "UPDATE mails SET attempts = attempts + 1, last_error = $3,"
        " next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
        mail_id,
        delay_seconds,
        error,
    )

"""SQL of the notifier: the mail log (every email, its state and attempts) and issued tokens.

Token emails are stored without their token: it is derived at send time (from the secret key,
the request, the confirmer and the round) and only its hash is kept, so the plaintext exists
nowhere but in the email.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg
from contacts_shared.contracts import Envelope
from contacts_shared.db import IF_CLAIMED, claim_cte
from contacts_shared.retention import Pruner

from contacts_notifier.domain import Email

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
    # For the retention job (PRUNERS): the mails whose texts are still kept once sent or
    # superseded (a scrubbed row leaves this index), and tokens by expiry.
    """
    CREATE INDEX mails_texts_kept ON mails ((coalesce(sent_at, created_at)))
        WHERE state <> 'pending'
        AND (subject IS NOT NULL OR body IS NOT NULL OR token_context IS NOT NULL OR last_error IS NOT NULL);
    CREATE INDEX tokens_expiry ON tokens (expires_at);
    """,
    # The round of codes a token email belongs to (its code is derived from it); one token
    # email per request, confirmer and round, whichever message asked for it.
    """
    ALTER TABLE mails ADD COLUMN generation int;
    """,
]

# Pruned by the retention job (contacts_shared.retention; $1 the retention in days, $2 the batch).
# The mail log keeps every row and what describes it (kind, request, NIC, address, state,
# attempts, times, dedupe key): the dedupe key is what stops a copy of a message, arriving after
# its inbox row was pruned, from mailing anyone twice; and the Message-ID of a sent email is its
# row's id. Dropped once an email is sent (or superseded, so never to be sent) longer ago than the
# retention: the texts holding personal data (subject and body of outcome emails, the context a
# token email was written from, the last SMTP error). Only pending mails are ever read for them.
# Tokens (hashes, kept for the record; nothing reads them) expired longer ago are deleted.
PRUNERS = (
    Pruner(
        "mail_texts",
        "UPDATE mails SET subject = NULL, body = NULL, token_context = NULL, last_error = NULL"
        " WHERE id = ANY(ARRAY(SELECT id FROM mails WHERE state <> 'pending'"
        " AND (subject IS NOT NULL OR body IS NOT NULL OR token_context IS NOT NULL OR last_error IS NOT NULL)"
        " AND coalesce(sent_at, created_at) < now() - make_interval(days => $1) LIMIT $2 FOR UPDATE SKIP LOCKED))",
    ),
    Pruner(
        "expired_code_hashes",
        "DELETE FROM tokens WHERE id = ANY(ARRAY(SELECT id FROM tokens"
        " WHERE expires_at < now() - make_interval(days => $1) LIMIT $2 FOR UPDATE SKIP LOCKED))",
    ),
)


# Ends each statement that queues mails: wakes the mailer at commit (NOTIFY), in the same round
# trip, and answers true when the message was fresh (no row when it was claimed before).
_FRESH_AND_WAKE_MAILER = " SELECT true FROM claimed, pg_notify(current_schema() || '_mail', '')"


async def claim_and_queue_token_mails(
    conn: asyncpg.Connection, envelope: Envelope, request_id: uuid.UUID, confirmers: list[tuple[str, str, int]], context: dict
) -> bool:
    """Claim `envelope` and queue a token email for each (nic, email, generation) of
    `confirmers`, in one statement (a `ClaimsItself` handler's); False, and nothing queued, if it
    was claimed before. A round already queued (the same request asked again) is not queued twice."""
    # A newer round (resend) makes an unsent older token mail pointless: its code would be stale.
    # The update sees the table as it was before the statement, so never the mails queued here.
    return bool(
        await conn.fetchval(
            f"WITH {claim_cte('$1', '$2')},"
            " wanted AS (SELECT * FROM unnest($4::text[], $5::text[], $7::int[]) AS u(n, e, g)),"
            " superseded AS (UPDATE mails m SET state = 'superseded' FROM wanted"
            " WHERE m.kind = 'token' AND m.request_id = $3 AND m.nic = wanted.n AND m.state = 'pending'"
            f" AND coalesce(m.generation, 1) < wanted.g AND {IF_CLAIMED}),"
            " queued AS (INSERT INTO mails (dedupe_key, kind, request_id, nic, email, generation, token_context)"
            " SELECT $3::text || ':' || n || ':token:' || g, 'token', $3, n, e, g, $6::jsonb FROM wanted"
            f" WHERE {IF_CLAIMED} ON CONFLICT (dedupe_key) DO NOTHING)" + _FRESH_AND_WAKE_MAILER,
            envelope.message_id,
            envelope.type,
            request_id,
            [nic for nic, _, _ in confirmers],
            [email for _, email, _ in confirmers],
            json.dumps(context),
            [generation for _, _, generation in confirmers],
        )
    )


async def claim_and_queue_outcome_mails(
    conn: asyncpg.Connection, envelope: Envelope, request_id: uuid.UUID, state: str, mails: list[tuple[str, str, Email]]
) -> bool:
    """Claim `envelope` and queue an outcome email for each (nic, address, email) of `mails`, in
    one statement; False, and nothing queued, if it was claimed before. An outcome email is one
    per request, state and recipient (a request reaches each final state once): a state announced
    again (a replayed submission) mails nobody twice."""
    return bool(
        await conn.fetchval(
            f"WITH {claim_cte('$1', '$2')},"
            " queued AS (INSERT INTO mails (dedupe_key, kind, request_id, nic, email, subject, body)"
            " SELECT $3::uuid::text || ':' || $8::text || ':' || n, 'outcome', $3::uuid, n, e, s, b"
            " FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) AS u(n, e, s, b)"
            f" WHERE {IF_CLAIMED} ON CONFLICT (dedupe_key) DO NOTHING)" + _FRESH_AND_WAKE_MAILER,
            envelope.message_id,
            envelope.type,
            request_id,
            [nic for nic, _, _ in mails],
            [address for _, address, _ in mails],
            [email.subject for _, _, email in mails],
            [email.body for _, _, email in mails],
            state,
        )
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
        "INSERT INTO tokens (request_id, nic, token_hash, expires_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (token_hash) DO NOTHING",  # the same code mailed again
        tokens,
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

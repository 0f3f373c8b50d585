"""SQL of the notifier: the mail log (every email, its state and attempts).

Token emails are stored without their token: it is derived at send time (from the secret key,
the request, the confirmer and the round) and only its hash is kept, so the plaintext exists
nowhere but in the email.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import asyncpg
from contacts_shared.contracts import (
    ContactChangeEmailFailed,
    Envelope,
)
from contacts_shared.db import IF_CLAIMED, claim_cte
from contacts_shared.outbox import enqueue
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
    # The advisory lock of the sender working on a mail (contacts_notifier.mailer), and how many
    # times the mail server refused it for good (5xx); a mail given up is 'failed'.
    """
    ALTER TABLE mails ADD COLUMN claim bigint, ADD COLUMN refusals int NOT NULL DEFAULT 0;
    """,
    # The hashes of the codes issued were kept here for the record, and nothing read them: the
    # requests service holds the one that counts (announced by `token_issued`).
    """
    DROP TABLE tokens;
    """,
    # The language each email is written in (its Content-Language): a token email is written
    # when it is sent, in its recipient's language as the message asking for it said. NULL: a
    # row queued before languages, written in English.
    """
    ALTER TABLE mails ADD COLUMN language text;
    """,
]

# Pruned by the retention job (contacts_shared.retention; $1 the retention in days, $2 the batch).
# The mail log keeps every row and what describes it (kind, request, NIC, address, state,
# attempts, times, dedupe key): the dedupe key is what stops a copy of a message, arriving after
# its inbox row was pruned, from mailing anyone twice; and the Message-ID of a sent email is its
# row's id. Dropped once an email is sent (or superseded, so never to be sent) longer ago than the
# retention: the texts holding personal data (subject and body of outcome emails, the context a
# token email was written from, the last SMTP error). Only pending mails are ever read for them.
PRUNERS = (
    Pruner(
        "mail_texts",
        "UPDATE mails SET subject = NULL, body = NULL, token_context = NULL, last_error = NULL"
        " WHERE id = ANY(ARRAY(SELECT id FROM mails WHERE state <> 'pending'"
        " AND (subject IS NOT NULL OR body IS NOT NULL OR token_context IS NOT NULL OR last_error IS NOT NULL)"
        " AND coalesce(sent_at, created_at) < now() - make_interval(days => $1) LIMIT $2 FOR UPDATE SKIP LOCKED))",
    ),
)


# Ends each statement that queues mails: wakes the mailer at commit (NOTIFY), in the same round
# trip, and answers true when the message was fresh (no row when it was claimed before).
_FRESH_AND_WAKE_MAILER = " SELECT true FROM claimed, pg_notify(current_schema() || '_mail', '')"


async def _claim_and_queue(conn: asyncpg.Connection, sql: str, envelope: Envelope, request_id: uuid.UUID, *args: object) -> bool:
    """Run a statement that claims `envelope` ($1, $2) and queues mails of `request_id` ($3,
    then `args`); whether the message was fresh."""
    return bool(await conn.fetchval(sql + _FRESH_AND_WAKE_MAILER, envelope.message_id, envelope.type, request_id, *args))


def _columns(rows: Sequence[tuple], width: int) -> list[list]:
    """`rows` column by column: the arrays a statement unnests into rows again."""
    return [[row[i] for row in rows] for i in range(width)]


async def claim_and_queue_token_mails(
    conn: asyncpg.Connection,
    envelope: Envelope,
    request_id: uuid.UUID,
    confirmers: list[tuple[str, str, int, str]],
    context: dict,
    heads_up: Sequence[tuple[str, str, Email]] = (),
) -> bool:
    """Claim `envelope` and queue a token email for each (nic, email, generation, language) of
    `confirmers` and each (nic, address, email) of `heads_up`, in one statement (a handler that
    claims itself); False, and nothing queued, if it was claimed before. A round already queued
    (the same request asked again) is not queued twice, nor a heads-up (one per request and
    person)."""
    # A newer round (resend) makes an unsent older token mail pointless: its code would be stale.
    # The update sees the table as it was before the statement, so never the mails queued here.
    return await _claim_and_queue(
        conn,
        f"WITH {claim_cte('$1', '$2')},"
        " wanted AS (SELECT * FROM unnest($4::text[], $5::text[], $6::int[], $12::text[]) AS u(n, e, g, l)),"
        " superseded AS (UPDATE mails m SET state = 'superseded' FROM wanted"
        " WHERE m.kind = 'token' AND m.request_id = $3 AND m.nic = wanted.n AND m.state = 'pending'"
        f" AND coalesce(m.generation, 1) < wanted.g AND {IF_CLAIMED}),"
        " queued AS (INSERT INTO mails (dedupe_key, kind, request_id, nic, email, generation, token_context, language)"
        " SELECT $3::text || ':' || n || ':token:' || g, 'token', $3, n, e, g, $7::jsonb, l FROM wanted"
        f" WHERE {IF_CLAIMED} ON CONFLICT (dedupe_key) DO NOTHING),"
        # A heads-up is mailed like an outcome: a text of its own, no code.
        " told AS (INSERT INTO mails (dedupe_key, kind, request_id, nic, email, subject, body, language)"
        " SELECT $3::text || ':heads-up:' || n, 'outcome', $3, n, e, s, b, l"
        " FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $13::text[]) AS u(n, e, s, b, l)"
        f" WHERE {IF_CLAIMED} ON CONFLICT (dedupe_key) DO NOTHING)",
        envelope,
        request_id,
        *_columns([(nic, address, generation) for nic, address, generation, _ in confirmers], 3),
        json.dumps(context),
        *_columns([(nic, address, email.subject, email.body) for nic, address, email in heads_up], 4),
        [language for *_, language in confirmers],
        [email.language for _, _, email in heads_up],
    )


async def claim_and_queue_batch_mails(
    conn: asyncpg.Connection, envelope: Envelope, batch_id: uuid.UUID, mails: list[tuple[str, str, dict, str]]
) -> bool:
    """Claim `envelope` and queue, for each (nic, address, context, language) of `mails`, the token email of
    a batch (one per batch and confirmer, its code derived from the batch: `request_id` holds the
    batch's id); False, and nothing queued, if it was claimed before."""
    return await _claim_and_queue(
        conn,
        f"WITH {claim_cte('$1', '$2')},"
        " queued AS (INSERT INTO mails (dedupe_key, kind, request_id, nic, email, generation, token_context, language)"
        " SELECT 'batch:' || $3::uuid::text || ':' || n || ':token', 'token', $3::uuid, n, e, 1, c::jsonb, l"
        " FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) AS u(n, e, c, l)"
        f" WHERE {IF_CLAIMED} ON CONFLICT (dedupe_key) DO NOTHING)",
        envelope,
        batch_id,
        *_columns([(nic, address, json.dumps(context), language) for nic, address, context, language in mails], 4),
    )


async def claim_and_queue_outcome_mails(
    conn: asyncpg.Connection, envelope: Envelope, request_id: uuid.UUID, state: str, mails: list[tuple[str, str, Email]]
) -> bool:
    """Claim `envelope` and queue an outcome email for each (nic, address, email) of `mails`, in
    one statement; False, and nothing queued, if it was claimed before. An outcome email is one
    per request, state and recipient (a request reaches each final state once): a state announced
    again (a replayed submission) mails nobody twice. Every outcome is final: token emails of the
    request still waiting are not sent any more."""
    return await _claim_and_queue(
        conn,
        f"WITH {claim_cte('$1', '$2')},"
        " ended AS (UPDATE mails SET state = 'superseded'"
        f" WHERE kind = 'token' AND request_id = $3 AND state = 'pending' AND {IF_CLAIMED}),"
        " queued AS (INSERT INTO mails (dedupe_key, kind, request_id, nic, email, subject, body, language)"
        " SELECT $3::uuid::text || ':' || $8::text || ':' || n, 'outcome', $3::uuid, n, e, s, b, l"
        " FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $9::text[]) AS u(n, e, s, b, l)"
        f" WHERE {IF_CLAIMED} ON CONFLICT (dedupe_key) DO NOTHING)",
        envelope,
        request_id,
        *_columns([(nic, address, email.subject, email.body) for nic, address, email in mails], 4),
        state,
        [email.language for _, _, email in mails],
    )


async def begin_claim(conn: asyncpg.Connection, claim: int) -> None:
    """Take the advisory lock `claim` for this connection's session (held while its batch is
    sent, gone with the connection if the process dies), and mark emails sent without waiting
    for the disk: losing a mark to a PostgreSQL crash only sends that email again."""
    await conn.execute("SELECT pg_advisory_lock($1), set_config('synchronous_commit', 'off', false)", claim)


async def end_claim(conn: asyncpg.Connection, claim: int) -> None:
    """Undo `begin_claim` before the connection goes back to the pool (which does not reset it)."""
    try:
        # Two statements in one round trip (the simple protocol takes no parameters: an int).
        await conn.execute(f"SELECT pg_advisory_unlock({int(claim)}); RESET synchronous_commit")
    except (asyncpg.PostgresError, OSError):
        conn.terminate()  # a lock left behind would hold the claimed emails until it closed


async def claim_due(conn: asyncpg.Connection, limit: int, claim: int) -> list[asyncpg.Record]:
    """Claim the oldest due emails for this sender, which holds the advisory lock `claim`: an
    email claimed by a sender whose lock is still held is skipped (by replicas too), one whose
    sender died (its lock gone with its connection) is due again."""
    rows = await conn.fetch(
        "UPDATE mails SET claim = $2 WHERE id = ANY(ARRAY(SELECT id FROM mails"
        " WHERE state = 'pending' AND next_attempt_at <= now() AND (claim IS NULL OR pg_try_advisory_xact_lock(claim))"
        " ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)) RETURNING *",
        limit,
        claim,
    )
    return sorted(rows, key=lambda row: (row["next_attempt_at"], row["id"]))


async def mark_sent(conn: asyncpg.Connection, mail_id: int) -> None:
    """The email went out: mark it sent."""
    # One statement, right after the SMTP server took the email: a crash in between sends only
    # this one again. `id = $1` alone: `id = ANY($1)` was planned as a sequential scan of the
    # whole mail log while the table was young (seen with the benchmark's --auto-explain).
    await conn.execute(
        "UPDATE mails SET state = 'sent', sent_at = now(), attempts = attempts + 1, last_error = NULL, claim = NULL"
        " WHERE id = $1",
        mail_id,
    )


async def postpone(conn: asyncpg.Connection, mail_id: int, delay_seconds: float, error: str, *, refused: bool) -> None:
    await conn.execute(
        "UPDATE mails SET attempts = attempts + 1, refusals = refusals + $4, last_error = $3, claim = NULL,"
        " next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
        mail_id,
        delay_seconds,
        error,
        int(refused),
    )


async def give_up(conn: asyncpg.Connection, mail_id: int, error: str, *failed: ContactChangeEmailFailed) -> None:
    """The email was refused for good too often: it is failed, and the requests service told
    (of each request a batch's email was about)."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE mails SET state = 'failed', attempts = attempts + 1, refusals = refusals + 1, last_error = $2,"
            " claim = NULL WHERE id = $1",
            mail_id,
            error,
        )
        await enqueue(conn, *failed)

"""What the notifier's retention job prunes, against the real PostgreSQL: the texts of mails sent
(or superseded) longer ago than the retention; every mail row stays, so a copy of a message
whose inbox row was pruned mails nobody twice."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import asyncpg
from contacts_notifier.handlers import HANDLERS
from contacts_notifier.store import PRUNERS
from contacts_shared.contracts import (
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    Contract,
    Envelope,
    envelope_for,
)
from contacts_shared.handling import by_routing_key
from contacts_shared.retention import COMMON_PRUNERS, Pruned, prune_once
from contacts_tools.testing import explain

Validation = Callable[[uuid.UUID], ContactChangeValidationRequested]

# What the notifier's runtime prunes (main.py: the inbox, then the notifier's own).
NOTIFIER_PRUNERS = (*COMMON_PRUNERS, *PRUNERS)
TEXTS = ("subject", "body", "token_context", "last_error")


async def add_mails(pool: asyncpg.Pool, count: int, *, kind: str, state: str, days_ago: float) -> None:
    """`count` mails queued `days_ago` days ago (and sent then, when `state` is sent), with texts."""
    await pool.execute(
        "INSERT INTO mails (dedupe_key, kind, request_id, nic, email, subject, body, token_context, state,"
        " last_error, created_at, sent_at)"
        " SELECT gen_random_uuid()::text || ':aa1-ovh', $1, gen_random_uuid(), 'aa1-ovh', 'aa1@example.com',"
        "  CASE WHEN $1 = 'outcome' THEN 'Contact change done' END,"
        "  CASE WHEN $1 = 'outcome' THEN 'Hello aa1-ovh, the technical contact of svc-1 is now bb2-ovh.' END,"
        "  CASE WHEN $1 = 'token' THEN '{\"service\": \"svc-1\", \"requester\": \"aa1-ovh\"}'::jsonb END,"
        "  $2, CASE WHEN $2 <> 'sent' THEN 'SMTPRecipientRefused: aa1@example.com' END,"
        "  now() - make_interval(secs => $3 * 86400 + 60),"
        "  CASE WHEN $2 = 'sent' THEN now() - make_interval(secs => $3 * 86400) END"
        " FROM generate_series(1, $4)",
        kind,
        state,
        days_ago,
        count,
    )


async def test_old_mail_texts_are_pruned_in_batches(pool: asyncpg.Pool) -> None:
    await add_mails(pool, 2300, kind="outcome", state="sent", days_ago=31)
    await add_mails(pool, 150, kind="token", state="sent", days_ago=31)
    await add_mails(pool, 50, kind="token", state="superseded", days_ago=31)
    # Kept whole: still pending however old (it will be sent), and sent within the retention.
    await add_mails(pool, 1, kind="outcome", state="pending", days_ago=40)
    await add_mails(pool, 2, kind="outcome", state="sent", days_ago=29.9)
    await add_mails(pool, 1, kind="token", state="sent", days_ago=0)
    before = await pool.fetch("SELECT id, dedupe_key, kind, request_id, nic, email, state, created_at, sent_at FROM mails ORDER BY id")

    assert await prune_once(pool, NOTIFIER_PRUNERS, 30) == {
        "inbox": Pruned(rows=0, batches=1),
        "mail_texts": Pruned(rows=2500, batches=3),
    }

    # Every row stays with what describes it; only the texts of the old sent or superseded go.
    after = await pool.fetch("SELECT id, dedupe_key, kind, request_id, nic, email, state, created_at, sent_at FROM mails ORDER BY id")
    assert after == before
    with_texts = await pool.fetch(
        f"SELECT state, kind, sent_at > now() - interval '30 days' AS recent FROM mails WHERE num_nonnulls({', '.join(TEXTS)}) > 0"
    )
    assert sorted(tuple(r) for r in with_texts) == [
        ("pending", "outcome", None),
        ("sent", "outcome", True),
        ("sent", "outcome", True),
        ("sent", "token", True),
    ]

    # Nothing left to do: one statement each, nothing touched.
    assert await prune_once(pool, NOTIFIER_PRUNERS, 30) == {
        "inbox": Pruned(rows=0, batches=1),
        "mail_texts": Pruned(rows=0, batches=1),
    }


async def test_the_pruning_statements_never_read_the_whole_table(pool: asyncpg.Pool) -> None:
    await add_mails(pool, 20_000, kind="outcome", state="sent", days_ago=1)
    await pool.execute("ANALYZE mails")
    for pruner in PRUNERS:  # nothing to do: a probe of a few index pages
        plan = await explain(pool, pruner.sql, 30, 1000)
        assert "Seq Scan" not in json.dumps(plan), (pruner.name, plan)
        assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] <= 10, (pruner.name, plan)
    await add_mails(pool, 1500, kind="outcome", state="sent", days_ago=31)
    for pruner in PRUNERS:  # a batch to do: by index, not by reading the 20,000 recent rows
        plan = await explain(pool, pruner.sql, 30, 1000)
        assert "Seq Scan" not in json.dumps(plan), (pruner.name, plan)


async def deliver(pool: asyncpg.Pool, message: Contract, envelope: Envelope) -> bool:
    handler = by_routing_key(HANDLERS)[envelope.type]
    async with pool.acquire() as conn:
        return await handler(conn, envelope, message)


async def test_a_copy_arriving_after_its_inbox_row_was_pruned_mails_nobody_twice(
    pool: asyncpg.Pool, validation: Validation, done_for: Callable[[uuid.UUID], ContactChangeStateChanged]
) -> None:
    request_id = uuid.uuid4()
    asked = validation(request_id)
    done = done_for(request_id)
    envelopes = [(asked, envelope_for(asked)), (done, envelope_for(done))]
    for message, envelope in envelopes:
        assert await deliver(pool, message, envelope) is True
    await pool.execute("UPDATE mails SET state = 'sent', sent_at = now() - interval '31 days'")
    await pool.execute("UPDATE inbox SET received_at = now() - interval '31 days'")
    pruned = await prune_once(pool, NOTIFIER_PRUNERS, 30)
    assert (pruned["inbox"].rows, pruned["mail_texts"].rows) == (2, 5)

    for message, envelope in envelopes:
        # The inbox no longer knows the message; the mail log's dedupe keys still do.
        assert await deliver(pool, message, envelope) is True
    assert await pool.fetchval("SELECT count(*) FROM mails") == 5
    assert await pool.fetchval("SELECT count(*) FROM mails WHERE state <> 'sent'") == 0

"""What the requests service's retention job prunes, against the real PostgreSQL: its inbox rows
older than the retention, nothing else. Requests, confirmers, their history and the idempotency
keys of submissions are kept, however old (the replicas too: tests/e2e/test_retention.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from contacts_requests.schema import MIGRATIONS
from contacts_shared.retention import COMMON_PRUNERS, Pruned, prune_once
from contacts_tools.testing import schema_pool

KEPT_TABLES = ("contact_changes", "confirmers", "history", "submissions")


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("requests", MIGRATIONS) as pool:
        yield pool


async def test_only_old_inbox_rows_go_requests_and_their_history_stay(pool: asyncpg.Pool) -> None:
    # 400 requests a year old, each with two confirmers, three history lines and its submission.
    await pool.execute(
        """
        INSERT INTO contact_changes (id, service, type, from_nic, to_nic, requester, state, created_at, updated_at, expires_at)
            SELECT gen_random_uuid(), 'svc-1', 'tech', 'bb2-ovh', 'cc3-ovh', 'aa1-ovh', 'done',
                   now() - interval '365 days', now() - interval '364 days', now() - interval '351 days'
            FROM generate_series(1, 400);
        INSERT INTO confirmers (request_id, nic, state, answered_at)
            SELECT id, nic, 'accepted', created_at FROM contact_changes, unnest(ARRAY['aa1-ovh', 'cc3-ovh']) AS n(nic);
        INSERT INTO history (request_id, at, state, actor)
            SELECT id, created_at, s, 'aa1-ovh' FROM contact_changes, unnest(ARRAY['checking', 'validating', 'done']) AS h(s);
        INSERT INTO submissions (requester, idempotency_key, request_ids, created_at)
            SELECT requester, id::text, ARRAY[id], created_at FROM contact_changes;
        INSERT INTO inbox (message_id, routing_key, received_at)
            SELECT gen_random_uuid(), 'contact_change.vetted', now() - interval '31 days' FROM generate_series(1, 2500);
        INSERT INTO inbox (message_id, routing_key, received_at)
            SELECT gen_random_uuid(), 'account.upserted', now() - interval '29 days' FROM generate_series(1, 3);
        """
    )
    before = {table: await pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2") for table in KEPT_TABLES}

    # What the requests service's runtime prunes: the common pruners, no other (main.py adds none).
    assert await prune_once(pool, COMMON_PRUNERS, 30) == {"inbox": Pruned(rows=2500, batches=3)}

    assert await pool.fetchval("SELECT count(*) FROM inbox") == 3
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE received_at < now() - interval '30 days'") == 0
    for table, rows in before.items():
        assert await pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2") == rows, table
    assert len(before["history"]) == 1200 and len(before["submissions"]) == 400

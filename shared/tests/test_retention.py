"""The retention job on the inbox every service has, against the real PostgreSQL: rows handled
longer ago than the retention go, in batches, and the rest stays; a pass with nothing to do is
one index probe, whatever the size of the inbox."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from contacts_shared.db import COMMON_INDEXES, claim_message, migrate
from contacts_shared.retention import COMMON_PRUNERS, INBOX, Pruned, prune_once
from contacts_tools.testing import TEST_DATABASE_URL, explain, schema_pool


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("retention", []) as pool:
        yield pool


async def add_inbox_rows(pool: asyncpg.Pool, count: int, days_ago: float) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    await pool.execute(
        "INSERT INTO inbox (message_id, routing_key, received_at)"
        " SELECT m, 'account.upserted', now() - make_interval(secs => $2 * 86400) FROM unnest($1::uuid[]) AS u(m)",
        ids,
        days_ago,
    )
    return ids


def counting_batches() -> tuple[list[int], Callable[[Callable[[], Awaitable[int]]], Awaitable[int]]]:
    """A `run` for prune_once that records what each batch (one statement) touched."""
    batches: list[int] = []

    async def run(unit: Callable[[], Awaitable[int]]) -> int:
        touched = await unit()
        batches.append(touched)
        return touched

    return batches, run


async def test_inbox_rows_older_than_the_retention_go_in_batches(pool: asyncpg.Pool) -> None:
    await add_inbox_rows(pool, 2500, days_ago=31)
    kept = await add_inbox_rows(pool, 1, days_ago=29.9) + await add_inbox_rows(pool, 2, days_ago=0)
    batches, run = counting_batches()

    assert await prune_once(pool, COMMON_PRUNERS, 30, run=run) == {"inbox": Pruned(rows=2500, batches=3)}
    assert batches == [1000, 1000, 500]
    assert {r["message_id"] for r in await pool.fetch("SELECT message_id FROM inbox")} == set(kept)


async def test_the_retention_is_the_setting_and_the_batch_a_parameter(pool: asyncpg.Pool) -> None:
    await add_inbox_rows(pool, 30, days_ago=8)
    kept = await add_inbox_rows(pool, 5, days_ago=6)
    assert await prune_once(pool, COMMON_PRUNERS, 30) == {"inbox": Pruned(rows=0, batches=1)}
    assert await prune_once(pool, COMMON_PRUNERS, 7, batch=8, pause=0) == {"inbox": Pruned(rows=30, batches=4)}
    assert {r["message_id"] for r in await pool.fetch("SELECT message_id FROM inbox")} == set(kept)


async def test_a_pass_with_nothing_to_do_is_one_index_probe(pool: asyncpg.Pool) -> None:
    await add_inbox_rows(pool, 20_000, days_ago=1)
    await pool.execute("ANALYZE inbox")
    batches, run = counting_batches()
    assert await prune_once(pool, COMMON_PRUNERS, 30, run=run) == {"inbox": Pruned(rows=0, batches=1)}
    assert batches == [0]  # one statement

    # The statement reads a few index pages, not the 20,000 rows (a heap scan reads 100+ pages).
    plan = await explain(pool, INBOX.sql, 30, 1000)
    assert "Seq Scan" not in json.dumps(plan), plan
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] <= 10, plan
    # With a batch to do, it is found by the index too.
    await add_inbox_rows(pool, 1500, days_ago=31)
    assert "Seq Scan" not in json.dumps(await explain(pool, INBOX.sql, 30, 1000))


async def test_a_copy_within_the_retention_is_still_a_duplicate(pool: asyncpg.Pool) -> None:
    message_id = uuid.uuid4()
    async with pool.acquire() as conn:
        assert await claim_message(conn, message_id, "account.upserted") is True
    await pool.execute("UPDATE inbox SET received_at = now() - interval '29 days 23 hours'")
    await prune_once(pool, COMMON_PRUNERS, 30)
    async with pool.acquire() as conn:
        assert await claim_message(conn, message_id, "account.upserted") is False
    # Past the retention the inbox forgets it (docs/decisions.md: why no copy is expected then).
    await pool.execute("UPDATE inbox SET received_at = now() - interval '30 days 1 hour'")
    await prune_once(pool, COMMON_PRUNERS, 30)
    async with pool.acquire() as conn:
        assert await claim_message(conn, message_id, "account.upserted") is True


async def test_a_schema_made_before_the_inbox_index_gets_it_at_start() -> None:
    async with schema_pool("retention", []) as pool:
        schema = await pool.fetchval("SELECT current_schema()")
        await pool.execute("DROP INDEX inbox_received_at")  # as migrated before the index existed
        assert await migrate(TEST_DATABASE_URL, schema, []) == 0  # no numbered migration pending
        for name in COMMON_INDEXES:
            assert await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", name), name

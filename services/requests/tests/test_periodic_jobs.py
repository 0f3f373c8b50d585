"""The requests service's periodic jobs (expiry, asking the billing check again) run every second
or so on every replica: their reads go through partial indexes of the open requests, never a scan
of the whole history, which only grows."""

from __future__ import annotations

import json
from datetime import timedelta

from contacts_requests import schema, store
from contacts_tools.testing import schema_pool


async def _plan(sql: str, *args: object) -> str:
    async with schema_pool("requests", schema.MIGRATIONS) as pool, pool.acquire() as conn:
        # Whatever the table's size, the planner must be able to use an index for these reads.
        await conn.execute("SET enable_seqscan = off")
        async with conn.transaction():
            return json.dumps(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))


async def test_the_expiry_and_the_second_question_read_only_open_requests() -> None:
    seen: list[str] = []

    class Recorder:
        async def fetch(self, sql: str, *args: object) -> list:
            seen.append(await _plan(sql, *args))
            return []

    await store.expired_request_ids(Recorder())  # type: ignore[arg-type]
    await store.unvetted_request_ids(Recorder(), timedelta(minutes=5))  # type: ignore[arg-type]
    assert len(seen) == 2
    assert "contact_changes_open_expiring" in seen[0] and "Seq Scan" not in seen[0], seen[0]
    assert "contact_changes_awaiting_vetting" in seen[1] and "Seq Scan" not in seen[1], seen[1]

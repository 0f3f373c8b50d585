"""Pruning of bookkeeping older than the retention (`CONTACTS_RETENTION_DAYS`, 30 by default).

Every service keeps, besides its own data, rows that only serve a while: the inbox (ids of the
messages already handled, so that a redelivery has no second effect), and in the notifier the
texts of emails already sent. A periodic job in each service drops what is older than the
retention, a small batch per statement (each statement its own transaction) with a short pause
between batches, so it never holds many locks for long nor takes the database from the
handlers. Requests, their history and the replicas are data, never pruned.

The first pass runs right after start, then one every `EVERY_SECONDS`. Replicas each run the
job; SKIP LOCKED keeps them from waiting on one another. A stop cancels the job between two
batches (a batch being deleted finishes: it takes milliseconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import structlog

log = structlog.get_logger("contacts.retention")

T = TypeVar("T")

# Rows per statement (one transaction each): milliseconds of work, a thousand row locks at most.
BATCH_ROWS = 1000
# Between two batches of a pass, so that a large backlog never takes the database for long.
PAUSE_SECONDS = 0.05
# After start, then between passes. Hourly: bookkeeping kept for days needs no finer grain.
FIRST_PASS_AFTER_SECONDS = 1.0
EVERY_SECONDS = 3600.0
# After a failed pass (database away), the next try comes sooner than the next hour.
RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class Pruner:
    """One kind of bookkeeping to prune: `sql` is one statement that deletes (or clears) at most
    `$2` rows older than `$1` days, and whose status ends with how many it touched. The rows are
    picked as `key = ANY(ARRAY(SELECT key ... LIMIT $2 FOR UPDATE SKIP LOCKED))`: with
    `IN (SELECT ...)` the planner may hash-join the batch against a scan of the whole table."""

    name: str
    sql: str


# The inbox of every service: message ids handled longer ago than the retention. A copy of such a
# message arriving now would be handled again; docs/decisions.md says why none is expected and
# what a late copy could do.
INBOX = Pruner(
    "inbox",
    "DELETE FROM inbox WHERE message_id = ANY(ARRAY(SELECT message_id FROM inbox"
    " WHERE received_at < now() - make_interval(days => $1) LIMIT $2 FOR UPDATE SKIP LOCKED))",
)

# What every service prunes; a service adds its own (the notifier's mail texts).
COMMON_PRUNERS: tuple[Pruner, ...] = (INBOX,)


@dataclass(frozen=True)
class Pruned:
    rows: int
    batches: int


async def _direct(unit: Callable[[], Awaitable[T]]) -> T:
    return await unit()


async def prune_once(
    pool: asyncpg.Pool,
    pruners: Sequence[Pruner],
    retention_days: int,
    *,
    batch: int = BATCH_ROWS,
    pause: float = PAUSE_SECONDS,
    run: Callable[[Callable[[], Awaitable[int]]], Awaitable[int]] = _direct,
) -> dict[str, Pruned]:
    """One pass: each pruner in batches until a batch comes back short. `run` runs each batch (the
    runtime's `InFlight.run`, so that a stop never cuts one). Returns what each pruner touched."""
    done: dict[str, Pruned] = {}
    for pruner in pruners:

        async def one_batch(pruner: Pruner = pruner) -> int:
            async with pool.acquire() as conn:
                status = await conn.execute(pruner.sql, retention_days, batch)
            return int(status.rsplit(" ", 1)[-1])

        rows = batches = 0
        while True:
            touched = await run(one_batch)
            rows += touched
            batches += 1
            if touched < batch:
                break
            await asyncio.sleep(pause)
        done[pruner.name] = Pruned(rows, batches)
    return done


async def prune_periodically(
    pool: asyncpg.Pool,
    pruners: Sequence[Pruner],
    retention_days: int,
    run: Callable[[Callable[[], Awaitable[int]]], Awaitable[int]] = _direct,
) -> None:
    """The job: a pass right after start, then every EVERY_SECONDS; runs until cancelled."""
    await asyncio.sleep(FIRST_PASS_AFTER_SECONDS)
    while True:
        try:
            done = await prune_once(pool, pruners, retention_days, run=run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - database away: the next pass comes sooner
            log.warning("pruning failed, will retry", reason=f"{type(exc).__name__}: {exc}", retry_in=RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)
            continue
        pruned = {name: p.rows for name, p in done.items() if p.rows}
        if pruned:
            log.info("bookkeeping pruned", retention_days=retention_days, **pruned)
        await asyncio.sleep(EVERY_SECONDS)

"""PostgreSQL helpers: one schema per service, migrations under an advisory lock, the inbox.

Each service owns `{namespace}{service}` and never reads another's. The pool pins
`search_path` to that schema, so the SQL in each store names tables without a schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import structlog

log = structlog.get_logger("contacts.db")

# Tables every service has: the idempotent inbox and the transactional outbox.
COMMON_MIGRATION = """
CREATE TABLE inbox (
    message_id  uuid PRIMARY KEY,
    routing_key text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    message_id  uuid NOT NULL UNIQUE,
    routing_key text NOT NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""

# Indexes the shared tables gained after COMMON_MIGRATION (version 0) shipped: made at start when
# missing, outside the numbered migrations, whose later numbers belong to each service. The
# inbox's lets the retention job find the rows past the retention without reading the table.
COMMON_INDEXES = {
    "inbox_received_at": "CREATE INDEX inbox_received_at ON inbox (received_at)",
}


def schema_name(namespace: str, service: str) -> str:
    return f"{namespace}{service}"


async def _no_reset(_: asyncpg.Connection) -> None:
    # The default reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) costs a round trip on
    # every release; our pooled connections keep no session state (no SET, advisory lock or
    # cursor; who listens unlistens), and asyncpg still rolls back an open transaction.
    return None


async def create_pool(database_url: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"contacts:{schema}"},
        reset=_no_reset,
    )
    assert pool is not None
    return pool


async def migrate(database_url: str, schema: str, migrations: Sequence[str]) -> int:
    """Create the schema and apply the pending migrations; returns how many were applied.

    Replicas may start together: the advisory lock lets one migrate while the others wait,
    then they find nothing left to do.
    """
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"contacts-migrate:{schema}")
        try:
            quoted = '"' + schema.replace('"', '""') + '"'
            # Under a least-privilege role the schema was made for it beforehand (deploy/postgres),
            # and the role may not CREATE in the database, not even "IF NOT EXISTS".
            if await conn.fetchval("SELECT to_regnamespace($1) IS NULL", quoted):
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            await conn.execute(f"SET search_path TO {quoted}")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied = 0
            for version, sql in enumerate([COMMON_MIGRATION, *migrations]):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied += 1
            for name, ddl in COMMON_INDEXES.items():
                if await conn.fetchval("SELECT to_regclass($1) IS NULL", name):
                    # Once per schema; on a large existing table writes to it wait for the build.
                    await conn.execute(ddl)
                    log.info("index added", schema=schema, index=name)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"contacts-migrate:{schema}")
    finally:
        await conn.close()


# The condition on which the other items of a `claim_cte` statement apply their effect.
IF_CLAIMED = "EXISTS (SELECT 1 FROM claimed)"


def claim_cte(message_id: str, routing_key: str) -> str:
    """The WITH item `claimed` that records a message as processed ($-parameters `message_id`
    and `routing_key`): one row if it is fresh, none if it was claimed before. The statement's
    other items apply their effect only where `IF_CLAIMED` holds, so a handler that claims and
    applies in one statement needs no transaction around it (see handling.Runs)."""
    return (
        f"claimed AS (INSERT INTO inbox (message_id, routing_key) VALUES ({message_id}, {routing_key})"
        " ON CONFLICT DO NOTHING RETURNING 1)"
    )


async def claim_message(conn: asyncpg.Connection, message_id: uuid.UUID, routing_key: str) -> bool:
    """Record a message as processed in the caller's transaction; False if it already was."""
    row = await conn.fetchval(
        "INSERT INTO inbox (message_id, routing_key) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
        message_id,
        routing_key,
    )
    return row is not None


async def drain_on_notify(
    pool: asyncpg.Pool,
    channel: str,
    drain_once: Callable[[], Awaitable[int]],
    *,
    batch: int | None = None,
    fallback_seconds: float = 1.0,
) -> None:
    """Run `drain_once` until it finds nothing, then sleep until NOTIFY on `channel` (or a timeout).

    With `batch`, a pass that handled fewer than `batch` items is the last: it found the queue
    empty, and a NOTIFY during the pass wakes the loop again (saves an empty transaction per wake).
    Notifications make the work immediate; the timeout covers one lost while reconnecting.
    Runs until cancelled; database errors are logged and retried.
    """
    wake = asyncio.Event()

    def on_notify(*_: object) -> None:
        wake.set()

    while True:
        listener: asyncpg.Connection | None = None
        try:
            listener = await pool.acquire()
            await listener.add_listener(channel, on_notify)
            while True:
                wake.clear()
                while (handled := await drain_once()) and (batch is None or handled >= batch):
                    pass
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=fallback_seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - database or broker away: retry later
            log.warning("background work interrupted, retrying", channel=channel, reason=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(fallback_seconds)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(channel, on_notify)
                with contextlib.suppress(Exception):
                    await pool.release(listener)


# What a database that is down, restarting, failing over or full of connections raises: the
# statement never ran (or its transaction was rolled back), and it will work once the server
# answers again, so the work is held and tried again rather than counted as a failure.
_OUTAGE_ERRORS = (
    OSError,  # connection refused or reset, host unreachable
    TimeoutError,  # connecting took too long
    asyncpg.PostgresConnectionError,  # class 08: the connection failed
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,  # a standby that is not promoted yet
    asyncpg.TargetServerAttributeNotMatched,  # of the hosts listed, none accepts writes (yet)
    asyncpg.ConnectionDoesNotExistError,  # the connection was lost mid-statement
)


async def database_answers(pool: asyncpg.Pool, timeout: float = 2.0) -> bool:
    """The readiness check of the database: a connection within `timeout` that answers a query."""
    try:
        async with pool.acquire(timeout=timeout) as conn:
            return bool(await conn.fetchval("SELECT true", timeout=timeout))
    except Exception:  # noqa: BLE001 - whatever the cause, not ready
        return False


# Every class an outage may raise, for handlers registered by class (is_database_outage decides).
MAYBE_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (*_OUTAGE_ERRORS, asyncpg.InterfaceError)


def is_database_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database is unreachable rather than that the work failed."""
    if isinstance(exc, _OUTAGE_ERRORS):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


class DatabaseGate:
    """Where work that found the database unreachable waits for it to answer again: one probe
    (`SELECT 1` every PROBE_SECONDS) for all of it, rather than each piece retrying on its own."""

    PROBE_SECONDS = 0.5

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._back = asyncio.Event()
        self._back.set()
        self._probe: asyncio.Task[None] | None = None

    @property
    def reachable(self) -> bool:
        return self._back.is_set()

    async def wait_until_back(self) -> None:
        if self._back.is_set():
            self._back.clear()
            self._probe = asyncio.create_task(self._until_it_answers(), name="database-probe")
        await self._back.wait()

    async def _until_it_answers(self) -> None:
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute("SELECT 1")
            except Exception:  # noqa: BLE001 - still away
                await asyncio.sleep(self.PROBE_SECONDS)
                continue
            self._back.set()
            return

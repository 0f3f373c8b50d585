"""PostgreSQL helpers: one schema per service, migrations under an advisory lock, the inbox.

Each service owns `{namespace}{service}` and never reads another's. The pool pins
`search_path` to that schema, so the SQL in each store names tables without a schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

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


def schema_name(namespace: str, service: str) -> str:
    return f"{namespace}{service}"


async def create_pool(database_url: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"contacts:{schema}"},
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
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"contacts-migrate:{schema}")
    finally:
        await conn.close()


async def claim_message(conn: asyncpg.Connection, message_id: uuid.UUID, routing_key: str) -> bool:
    """Record a message as processed in the caller's transaction; False if it already was."""
    row = await conn.fetchval(
        "INSERT INTO inbox (message_id, routing_key) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
        message_id,
        routing_key,
    )
    return row is not None

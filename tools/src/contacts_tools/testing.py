"""Support for the services' own tests against the real PostgreSQL (not used at run time)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence

import aio_pika
import asyncpg
from contacts_shared.bus import ServiceBus
from contacts_shared.db import create_pool, migrate
from contacts_shared.handling import Subscription

TEST_DATABASE_URL = os.environ.get("CONTACTS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_AMQP_URL = os.environ.get("CONTACTS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


@contextlib.asynccontextmanager
async def schema_pool(service: str, migrations: Sequence[str]) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a schema of its own (a random name), migrated, and dropped afterwards: each
    test isolates itself, in any order and run after run."""
    schema = f"t{uuid.uuid4().hex[:10]}_{service}"
    await migrate(TEST_DATABASE_URL, schema, migrations)
    pool = await create_pool(TEST_DATABASE_URL, schema)
    try:
        yield pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(TEST_DATABASE_URL)
        try:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await admin.close()


async def explain(pool: asyncpg.Pool, sql: str, *args: object) -> dict:
    """The plan of a statement as run (EXPLAIN ANALYZE, rolled back), with the buffers it touched."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            return json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args))[0]["Plan"]
        finally:
            await tx.rollback()


@contextlib.asynccontextmanager
async def publishing_bus(pool: asyncpg.Pool, service: str) -> AsyncIterator[ServiceBus]:
    """A service's bus in a namespace of its own, its broker connected and its exchange
    declared, but neither its consumer nor its relay loop started: a test runs the relay's
    passes itself. The exchange is deleted afterwards."""
    bus = ServiceBus(amqp_url=TEST_AMQP_URL, namespace=f"t{uuid.uuid4().hex[:10]}_", service=service, pool=pool)
    await bus.broker.connect()
    await bus.broker.declare_exchange(bus.exchange)
    try:
        yield bus
    finally:
        await bus.broker.stop()
        connection = await aio_pika.connect(TEST_AMQP_URL)
        async with connection:
            await (await connection.channel()).exchange_delete(bus.exchange.name)


@contextlib.asynccontextmanager
async def consuming_bus(
    pool: asyncpg.Pool, service: str, subscriptions: Sequence[Subscription], *, namespace: str | None = None, **options: object
) -> AsyncIterator[ServiceBus]:
    """A service's bus consuming on the real RabbitMQ, in a namespace of its own unless given one
    (services of one test share it); its queues and exchange are deleted afterwards."""
    namespace = namespace or f"t{uuid.uuid4().hex[:10]}_"
    bus = ServiceBus(amqp_url=TEST_AMQP_URL, namespace=namespace, service=service, pool=pool, **options)  # type: ignore[arg-type]
    bus.handle_all(subscriptions)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop_consuming()
        await bus.stop()
        connection = await aio_pika.connect(TEST_AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for queue in (bus.queue, bus.dead_letters, bus.retry_queue):
                await channel.queue_delete(queue.name)
            await channel.exchange_delete(bus.exchange.name)

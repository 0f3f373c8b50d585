"""Raw ceilings of the parts one flow is made of, on this machine, with no code of ours:

- RabbitMQ: persistent publish with publisher confirm -> consume -> ack, through a quorum
  queue like the services' (aio-pika), publishers and consumer running concurrently;
- PostgreSQL: single-row INSERT transactions (asyncpg, a pool, concurrent clients);
- SMTP: deliveries to the same sink the services send to (aiosmtplib, concurrent clients,
  one connection per client reused for its messages, as an MTA would).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from email.message import EmailMessage

import aio_pika
import aiosmtplib
import asyncpg

from bench.harness import CEILING_SUBJECT


async def rabbitmq_round_trips(amqp_url: str, namespace: str, messages: int, in_flight: int = 64, prefetch: int = 64) -> float:
    """Round trips per second (publish+confirm, then consume+ack)."""
    queue_name = f"{namespace}bench.ceiling"
    publisher = await aio_pika.connect(amqp_url)
    consumer = await aio_pika.connect(amqp_url)
    try:
        pub_channel = await publisher.channel(publisher_confirms=True)
        await pub_channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        sub_channel = await consumer.channel()
        await sub_channel.set_qos(prefetch_count=prefetch)
        sub_queue = await sub_channel.get_queue(queue_name)
        received = 0
        all_in = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received >= messages:
                all_in.set()

        await sub_queue.consume(on_message)
        body = b'{"bench": "' + b"x" * 400 + b'"}'  # about the size of our envelopes
        slots = asyncio.Semaphore(in_flight)

        async def publish_one() -> None:
            async with slots:
                await pub_channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(uuid.uuid4())),
                    routing_key=queue_name,
                )

        started = time.perf_counter()
        await asyncio.gather(*(publish_one() for _ in range(messages)))
        await asyncio.wait_for(all_in.wait(), timeout=120)
        elapsed = time.perf_counter() - started
        await consumer.close()
        await pub_channel.queue_delete(queue_name)
        return messages / elapsed
    finally:
        if not consumer.is_closed:
            await consumer.close()
        await publisher.close()


async def postgres_insert_transactions(admin_url: str, transactions: int, clients: int = 10) -> float:
    """Committed single-row INSERT transactions per second."""
    table = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(admin_url, min_size=clients, max_size=clients)
    assert pool is not None
    try:
        await pool.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, message_id uuid NOT NULL, body text NOT NULL)")
        body = "x" * 400
        remaining = transactions

        async def client() -> None:
            nonlocal remaining
            async with pool.acquire() as conn:
                statement = await conn.prepare(f"INSERT INTO {table} (message_id, body) VALUES ($1, $2)")
                while remaining > 0:
                    remaining -= 1
                    await statement.fetch(uuid.uuid4(), body)  # autocommit: one transaction

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        return transactions / elapsed
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}")
        await pool.close()


async def smtp_deliveries(host: str, port: int, deliveries: int, clients: int = 8) -> float:
    """Messages accepted per second by the sink."""
    remaining = deliveries

    async def client(number: int) -> None:
        nonlocal remaining
        smtp = aiosmtplib.SMTP(hostname=host, port=port, timeout=30)
        await smtp.connect()
        try:
            while remaining > 0:
                remaining -= 1
                message = EmailMessage()
                message["From"] = "bench@example.test"
                message["To"] = f"ceiling{number}@example.test"
                message["Subject"] = f"{CEILING_SUBJECT} {remaining}"
                message.set_content("x" * 600)  # about the size of our emails
                await smtp.send_message(message)
        finally:
            await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return deliveries / (time.perf_counter() - started)


def combined_ceiling(costs: dict[str, float], ceilings: dict[str, float]) -> float:
    """Flows per second the parts alone would allow when they share the machine:
    1 / sum(cost per flow / ceiling) over RabbitMQ, PostgreSQL and SMTP."""
    return 1.0 / sum(costs[part] / ceilings[part] for part in ceilings)

"""RabbitMQ wiring shared by the services: the exchange, one quorum queue and one dead-letter
queue per service, a consumer that acks only after the handler's transaction commits, and the
transactional outbox with its relay.

Delivery is at least once; effects are exactly once because every handler first claims the
message id in its service's inbox inside the same transaction as its writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from faststream import AckPolicy
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage

from contacts_shared.contracts import Contract, Envelope, MalformedMessage, envelope_for, parse_message
from contacts_shared.db import claim_message, drain_on_notify

log = structlog.get_logger("contacts.bus")

# A handler gets a connection inside an open transaction, the envelope and the typed data.
Handler = Callable[[asyncpg.Connection, Envelope, Any], Awaitable[None]]

# Outbox rows published per relay transaction.
RELAY_BATCH = 200

# After this many failed deliveries a message goes to the dead-letter queue with the last error.
MAX_ATTEMPTS = 8


def exchange_for(namespace: str) -> RabbitExchange:
    return RabbitExchange(f"{namespace}contacts", type=ExchangeType.TOPIC, durable=True)


def dead_letter_queue_for(namespace: str, service: str) -> RabbitQueue:
    return RabbitQueue(f"{namespace}{service}.dlq", queue_type=QueueType.QUORUM, durable=True)


def queue_for(namespace: str, service: str) -> RabbitQueue:
    dlq = dead_letter_queue_for(namespace, service)
    return RabbitQueue(
        f"{namespace}{service}",
        queue_type=QueueType.QUORUM,
        durable=True,
        arguments={
            # Backstop for a consumer that dies on a message before it can dead-letter it.
            "x-delivery-limit": MAX_ATTEMPTS + 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq.name,
        },
    )


def new_broker(amqp_url: str) -> RabbitBroker:
    # Logging of each message is ours (without bodies: they may carry personal data).
    return RabbitBroker(amqp_url, logger=None)


async def publish_envelope(broker: RabbitBroker, exchange: RabbitExchange, envelope: Envelope) -> None:
    await broker.publish(
        envelope.model_dump_json().encode(),
        exchange=exchange,
        routing_key=envelope.type,
        persist=True,
        message_id=str(envelope.message_id),
        content_type="application/json",
    )


async def enqueue(conn: asyncpg.Connection, data: Contract, message_id: uuid.UUID | None = None) -> uuid.UUID:
    """Put a message in the outbox inside the caller's transaction; the relay publishes it."""
    envelope = envelope_for(data, message_id)
    await conn.execute(
        "INSERT INTO outbox (message_id, routing_key, body) VALUES ($1, $2, $3)",
        envelope.message_id,
        envelope.type,
        envelope.model_dump_json(),
    )
    # Wakes the relay at commit instead of making it poll.
    await conn.execute("SELECT pg_notify(current_schema() || '_outbox', '')")
    return envelope.message_id


class ServiceBus:
    """The broker side of one service: its queue, bindings, dead-letter queue and outbox relay."""

    def __init__(self, *, amqp_url: str, namespace: str, service: str, pool: asyncpg.Pool) -> None:
        self.broker = new_broker(amqp_url)
        self.exchange = exchange_for(namespace)
        self.queue = queue_for(namespace, service)
        self.dead_letters = dead_letter_queue_for(namespace, service)
        self.pool = pool
        self._handlers: dict[str, Handler] = {}
        self._relay_task: asyncio.Task[None] | None = None

    def handle(self, routing_key: str, handler: Handler) -> None:
        self._handlers[routing_key] = handler

    def handle_all(self, handlers: dict[str, Handler]) -> None:
        for key, handler in handlers.items():
            self.handle(key, handler)

    async def start(self) -> None:
        self.broker.subscriber(self.queue, ack_policy=AckPolicy.MANUAL, decoder=_raw_body)(self._on_message)
        await self.broker.connect()
        await self.broker.declare_queue(self.dead_letters)
        queue = await self.broker.declare_queue(self.queue)
        exchange = await self.broker.declare_exchange(self.exchange)
        for key in self._handlers:
            await queue.bind(exchange, routing_key=key)
        await self.broker.start()
        channel = await self.pool.fetchval("SELECT current_schema() || '_outbox'")
        self._relay_task = asyncio.create_task(drain_on_notify(self.pool, channel, self.relay_once, batch=RELAY_BATCH), name="outbox-relay")

    async def stop(self) -> None:
        if self._relay_task:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
        await self.broker.stop()

    # --- consuming ------------------------------------------------------------------------

    async def _on_message(self, body: bytes, message: RabbitMessage) -> None:
        routing_key = message.raw_message.routing_key or ""
        bound = log.bind(routing_key=routing_key, amqp_message_id=message.message_id)
        try:
            handler = self._handlers.get(routing_key)
            if handler is None:
                raise MalformedMessage(f"this service does not consume routing key {routing_key!r}")
            envelope, data = parse_message(body, routing_key)
        except MalformedMessage as exc:
            await self._dead_letter(message, routing_key, str(exc))
            bound.warning("message dead-lettered", reason=str(exc))
            await message.ack()
            return

        bound = bound.bind(message_id=str(envelope.message_id))
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                fresh = await claim_message(conn, envelope.message_id, routing_key)
                if fresh:
                    await handler(conn, envelope, data)
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered
            attempts = int((message.headers or {}).get("x-delivery-count", 0)) + 1
            reason = f"{type(exc).__name__}: {exc}"[:500]
            if attempts >= MAX_ATTEMPTS:
                await self._dead_letter(message, routing_key, f"failed {attempts} times, last: {reason}")
                bound.error("message dead-lettered after retries", attempts=attempts, reason=reason)
                await message.ack()
            else:
                bound.warning("handler failed, will retry", attempts=attempts, reason=reason)
                await asyncio.sleep(min(0.05 * 2**attempts, 2.0))
                await message.nack(requeue=True)
            return
        await message.ack()
        bound.debug("message handled" if fresh else "duplicate message skipped")

    async def _dead_letter(self, message: RabbitMessage, routing_key: str, reason: str) -> None:
        await self.broker.publish(
            message.body,
            queue=self.dead_letters,
            persist=True,
            headers={"x-reason": reason, "x-routing-key": routing_key, "x-original-message-id": message.message_id or ""},
            message_id=message.message_id or None,
        )

    # --- the outbox relay -------------------------------------------------------------------

    async def relay_once(self, batch: int = RELAY_BATCH) -> int:
        """Publish one batch of the outbox (with confirms), then delete it; returns its size."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, body FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED", batch
            )
            if not rows:
                return 0
            envelopes = [Envelope.model_validate_json(r["body"]) for r in rows]
            # A crash after publishing and before the delete commits republishes the batch;
            # consumers' inboxes make that harmless.
            await asyncio.gather(*(publish_envelope(self.broker, self.exchange, e) for e in envelopes))
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
            return len(rows)


async def _raw_body(message: Any) -> bytes:
    # Parsing is ours, so that a malformed body becomes a dead letter with a reason.
    return message.body

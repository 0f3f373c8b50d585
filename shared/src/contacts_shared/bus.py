"""RabbitMQ wiring shared by the services: the exchange, one quorum queue and one dead-letter
queue per service, a consumer that acks only after the handler's transaction commits, and the
task that runs the service's outbox relay (the outbox itself: `contacts_shared.outbox`).

Delivery is at least once; effects are exactly once because every handler first claims the
message id in its service's inbox inside the same transaction as its writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from faststream import AckPolicy
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.rabbit.annotations import RabbitMessage

from contacts_shared.contracts import (
    Contract,
    Envelope,
    MalformedMessage,
    envelope_for,
    parse_message,
)
from contacts_shared.db import (
    DatabaseGate,
    claim_message,
    drain_on_notify,
    is_database_outage,
)
from contacts_shared.graceful import InFlight
from contacts_shared.observability import (
    DEAD_LETTERS,
    MESSAGE_SECONDS,
    MESSAGES_HANDLED,
    OUTBOX_BACKLOG,
)
from contacts_shared.outbox import (
    RELAY_BATCH,
    OutboxRelay,
    Unroutable,
    count_unroutable,
    publish_envelope,
)
from contacts_shared.retry import (
    MAX_ATTEMPTS,
    RETRY_SECONDS,
    failures_so_far,
    publish_copy,
    retry_later,
    retry_queue_for,
    routing_key_of,
)

log = structlog.get_logger("contacts.bus")

# A handler gets a connection inside an open transaction, the envelope and the typed data
# (unless it is a `ClaimsItself`, which gets a connection outside any transaction).
Handler = Callable[[asyncpg.Connection, Envelope, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Selective:
    """A handler for a message type of which only some messages call for anything.

    `concerns(data)` is a pure test; a message it says no to is acked without a transaction or
    an inbox row: it has no effect to apply exactly once (the notifier hears of every state a
    request goes through and mails for a few: the others cost three round trips each)."""

    handler: Handler
    concerns: Callable[[Any], bool]

    async def __call__(self, conn: asyncpg.Connection, envelope: Envelope, data: Any) -> None:
        await self.handler(conn, envelope, data)


@dataclass(frozen=True)
class ClaimsItself:
    """A handler whose whole effect is one statement that also claims the message in the inbox
    (`db.claim_cte`, `claim_and_enqueue`). A statement commits as a whole, so it runs without
    BEGIN and COMMIT around it: two round trips less per message. Reads it needs before that
    statement run alone, outside any transaction. `apply` returns whether the message was fresh."""

    apply: Callable[[asyncpg.Connection, Envelope, Any], Awaitable[bool]]

    async def __call__(self, conn: asyncpg.Connection, envelope: Envelope, data: Any) -> bool:
        return await self.apply(conn, envelope, data)


# Backstop for a message that kills its consumer each time, before it can be retried or
# dead-lettered (the broker counts those redeliveries): far above what outages add (a message
# held through a database outage comes back once per broker reconnect).
DELIVERY_LIMIT = 50

# At shutdown, how long messages being handled and outbox batches being published may take to
# finish (the whole stop must fit in the 10 s an orchestrator gives before SIGKILL).
GRACE_SECONDS = 5.0

# Messages RabbitMQ hands a consumer before it has acked them. Unbounded, a backlog would all
# be pushed into one process's memory, and a stopping consumer would receive it only to give it
# back; 200 is far above what a consumer has in hand at full load (bench/README.md).
PREFETCH = 200

# No message of the contracts comes near this; a bigger body is abuse or a bug upstream and is
# dead-lettered unparsed rather than held in memory and validated.
MAX_BODY_BYTES = 1024 * 1024


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
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq.name,
        },
    )


def new_broker(amqp_url: str, *, graceful_timeout: float | None = None) -> RabbitBroker:
    # Logging of each message is ours (without bodies: they may carry personal data).
    # graceful_timeout: stopping a subscriber waits that long for the messages in its hands.
    # apply_types=False: the one subscriber takes the raw body and parses it itself, so
    # FastStream's dependency injection (fast_depends) had nothing to inject, yet wrapped every
    # message's call (py-spy, bench/README.md).
    # The consumer shares the default channel with the queue declarations: its prefetch is set there.
    return RabbitBroker(
        amqp_url,
        logger=None,
        graceful_timeout=graceful_timeout,
        apply_types=False,
        default_channel=Channel(prefetch_count=PREFETCH),
    )


class ServiceBus:
    """The broker side of one service: its queue, bindings, dead-letter queue and outbox relay."""

    def __init__(
        self, *, amqp_url: str, namespace: str, service: str, pool: asyncpg.Pool, retry_seconds: int = RETRY_SECONDS
    ) -> None:
        self.broker = new_broker(amqp_url, graceful_timeout=GRACE_SECONDS)
        self.exchange = exchange_for(namespace)
        self.queue = queue_for(namespace, service)
        self.dead_letters = dead_letter_queue_for(namespace, service)
        self.retry_queue = retry_queue_for(self.queue, retry_seconds)
        # Messages that found the database unreachable wait here, held, until it answers.
        self.database = DatabaseGate(pool)
        self._stopping = False
        self.pool = pool
        self._handlers: dict[str, Handler] = {}
        self.relay = OutboxRelay(pool, self.broker, self.exchange)
        self._relay_task: asyncio.Task[None] | None = None
        self._relay_batches = InFlight()

    def handle(self, routing_key: str, handler: Handler) -> None:
        self._handlers[routing_key] = handler

    def handle_all(self, handlers: dict[str, Handler]) -> None:
        for key, handler in handlers.items():
            self.handle(key, handler)

    async def start(self) -> None:
        self.broker.subscriber(self.queue, ack_policy=AckPolicy.MANUAL, decoder=_raw_body)(self._on_message)
        await self.broker.connect()
        await self.broker.declare_queue(self.dead_letters)
        await self.broker.declare_queue(self.retry_queue)
        queue = await self.broker.declare_queue(self.queue)
        exchange = await self.broker.declare_exchange(self.exchange)
        for key in self._handlers:
            await queue.bind(exchange, routing_key=key)
        await self.broker.start()
        channel = await self.pool.fetchval("SELECT current_schema() || '_outbox'")
        self._relay_task = asyncio.create_task(
            drain_on_notify(self.pool, channel, lambda: self._relay_batches.run(self.relay.relay_once), batch=RELAY_BATCH),
            name="outbox-relay",
        )

    async def stop_consuming(self) -> None:
        """Cancel the consumers, then wait (up to GRACE_SECONDS) for the messages being handled:
        each one commits and is acked, or rolls back and goes back to the queue unacked."""
        self._stopping = True
        for subscriber in self.broker.subscribers:
            await subscriber.stop()

    async def stop(self) -> None:
        """After stop_consuming: stop the relay without cutting a batch in half, publish what the
        last handlers left in the outbox, then close the connection."""
        if self._relay_task:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
        await self._relay_batches.wait(GRACE_SECONDS)
        with contextlib.suppress(Exception):  # what is left is published by a replica or at restart
            await asyncio.wait_for(self._relay_batches.run(self.relay.relay_once), timeout=2)
        await self.broker.stop()

    async def publish_now(self, *messages: Contract) -> None:
        """Publish `messages` at once, each confirmed by the broker when this returns, bypassing
        the outbox: for a message that must be out before an effect outside any database (the
        notifier announces a token before its email leaves). Raises if any is not confirmed, and
        `Unroutable` if RabbitMQ returned any (no queue of its consumer is bound yet)."""
        envelopes = [envelope_for(m) for m in messages]
        routed = await asyncio.gather(*(publish_envelope(self.broker, self.exchange, e) for e in envelopes))
        returned = [(e.type, e.message_id) for e, ok in zip(envelopes, routed, strict=True) if not ok]
        failed = [(key, message_id) for key, message_id in returned if count_unroutable(key)]
        for key, message_id in failed:
            log.warning("message unroutable, not published", routing_key=key, amqp_message_id=str(message_id))
        if failed:
            raise Unroutable(failed)

    async def consuming(self) -> bool:
        """Whether this process's consumer is registered on a live channel. After a reconnect
        aio-pika restores consumers, yet a consumer can stay lost (FastStream reports of queues
        left without consumers); this looks at the channel itself, not at the broker's count,
        which replicas share."""
        for subscriber in self.broker.subscribers:
            # FastStream keeps the aio-pika queue and the consumer tag on the subscriber.
            queue, tag = getattr(subscriber, "_queue_obj", None), getattr(subscriber, "_consumer_tag", None)
            if queue is None or tag is None:
                return False
            try:
                channel = await asyncio.wait_for(queue.channel.get_underlay_channel(), timeout=2)
            except Exception:  # noqa: BLE001 - no live channel
                return False
            if channel.is_closed or tag not in channel.consumers:
                return False
        return True

    async def ready(self) -> bool:
        """Connected to the broker and consuming."""
        return await self.is_connected() and await self.consuming()

    async def is_connected(self) -> bool:
        try:
            return bool(self.broker.running and await self.broker.ping(timeout=2))
        except Exception:  # noqa: BLE001 - reported as not ready
            return False

    async def refresh_metrics(self) -> None:
        """Outbox backlog (PostgreSQL) and dead-letter depth (a passive look at the queue)."""
        OUTBOX_BACKLOG.set(await self.pool.fetchval("SELECT count(*) FROM outbox"))
        queue = await self.broker.declare_queue(self.dead_letters)
        declared = await queue.declare()  # same arguments: answers with the current counts
        DEAD_LETTERS.labels(self.dead_letters.name).set(declared.message_count or 0)

    # --- consuming ------------------------------------------------------------------------

    async def _on_message(self, body: bytes) -> None:
        # Taken from the broker's context, not injected as a parameter: FastStream resolves an
        # injected context value in a worker thread, a thread hop per message (py-spy, see
        # bench/README.md).
        message: RabbitMessage = self.broker.context.get_local("message")
        routing_key = routing_key_of(message, self.queue)
        # The publisher's own id: the AMQP property, else the envelope's (clients such as
        # amqp-tools cannot set the property; FastStream would make one up).
        message_id = message.raw_message.message_id or envelope_message_id(body)
        bound = log.bind(routing_key=routing_key, amqp_message_id=message_id)
        try:
            handler = self._handlers.get(routing_key)
            if handler is None:
                raise MalformedMessage(f"this service does not consume routing key {routing_key!r}")
            if len(body) > MAX_BODY_BYTES:
                raise MalformedMessage(f"body of {len(body)} bytes is larger than {MAX_BODY_BYTES} bytes")
            envelope, data = parse_message(body, routing_key)
        except MalformedMessage as exc:
            await self._dead_letter(message, routing_key, message_id, str(exc))
            bound.warning("message dead-lettered", reason=str(exc))
            MESSAGES_HANDLED.labels(routing_key, "dead_lettered").inc()
            await message.ack()
            return

        # Every log line written while handling it (handlers' included) carries its message_id.
        with structlog.contextvars.bound_contextvars(message_id=str(envelope.message_id)):
            await self._handle(message, routing_key, handler, envelope, data, bound)

    async def _handle(
        self, message: RabbitMessage, routing_key: str, handler: Handler, envelope: Envelope, data: Any, bound: Any
    ) -> None:
        if isinstance(handler, Selective):
            if not handler.concerns(data):
                await message.ack()
                MESSAGES_HANDLED.labels(routing_key, "nothing_to_do").inc()
                return
            handler = handler.handler
        started = time.monotonic()
        while True:
            try:
                fresh = await self._apply(handler, routing_key, envelope, data)
                break
            except Exception as exc:  # noqa: BLE001 - an outage is waited out, any other failure retried
                if is_database_outage(exc) and not self._stopping:
                    # Not an attempt: the message is held (unacked, uncounted) and tried again
                    # once the database answers; /readyz says not ready meanwhile.
                    if self.database.reachable:
                        bound.warning("database unreachable, holding messages", reason=f"{type(exc).__name__}: {exc}"[:200])
                    await self.database.wait_until_back()
                    continue
                await self._failed(message, routing_key, envelope, exc, bound)
                return
        await message.ack()
        MESSAGE_SECONDS.labels(routing_key).observe(time.monotonic() - started)
        MESSAGES_HANDLED.labels(routing_key, "handled" if fresh else "duplicate").inc()
        bound.info("message handled" if fresh else "duplicate message skipped")

    async def _apply(self, handler: Handler, routing_key: str, envelope: Envelope, data: Any) -> bool:
        """Run the handler, claiming the message in the inbox; False if it was claimed before."""
        if isinstance(handler, ClaimsItself):
            async with self.pool.acquire() as conn:
                return await handler.apply(conn, envelope, data)
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await claim_message(conn, envelope.message_id, routing_key)
            if fresh:
                await handler(conn, envelope, data)
            return fresh

    async def _failed(self, message: RabbitMessage, routing_key: str, envelope: Envelope, exc: Exception, bound: Any) -> None:
        """Retry the message later through a retry queue, or dead-letter it after MAX_ATTEMPTS."""
        failures = failures_so_far(message, self.queue) + 1
        reason = f"{type(exc).__name__}: {exc}"[:500]
        if self._stopping:
            await message.nack(requeue=True)  # handled again by a replica or after the restart
            return
        if failures >= MAX_ATTEMPTS:
            await self._dead_letter(message, routing_key, str(envelope.message_id), f"failed {failures} times, last: {reason}")
            bound.error("message dead-lettered after retries", attempts=failures, reason=reason)
            MESSAGES_HANDLED.labels(routing_key, "dead_lettered").inc()
        else:
            try:
                await retry_later(self.broker, self.retry_queue, message, routing_key, failures)
            except Exception:  # noqa: BLE001 - the broker is away: the message goes back as it is
                await asyncio.sleep(1.0)
                await message.nack(requeue=True)
                return
            retry_in = self.retry_queue.arguments["x-message-ttl"] / 1000  # type: ignore[index]
            bound.warning("handler failed, will retry", attempts=failures, retry_in=retry_in, reason=reason)
            MESSAGES_HANDLED.labels(routing_key, "retried").inc()
        await message.ack()

    async def _dead_letter(self, message: RabbitMessage, routing_key: str, message_id: str | None, reason: str) -> None:
        """Park the message, unchanged, in the dead-letter queue: the body, the publisher's own
        headers and properties, and ours saying why (`x-reason`) and where it came from."""
        headers = {"x-reason": reason, "x-routing-key": routing_key, "x-original-message-id": message_id or ""}
        await publish_copy(self.broker, message, self.dead_letters, headers, message_id)


def envelope_message_id(body: bytes) -> str | None:
    """The envelope's `message_id` if the body has a readable one, else None (never raises)."""
    try:
        value = json.loads(body).get("message_id")
        return str(uuid.UUID(value)) if isinstance(value, str) else None
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


async def _raw_body(message: Any) -> bytes:
    # Parsing is ours, so that a malformed body becomes a dead letter with a reason.
    return message.body

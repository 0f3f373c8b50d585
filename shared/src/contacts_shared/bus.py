"""RabbitMQ wiring shared by the services: the exchange, one quorum queue, one retry queue and
one dead-letter queue per service, its consumer (`contacts_shared.consumer`: acks only after
the handler's transaction commits), and the task that runs the service's outbox relay (the
outbox itself: `contacts_shared.outbox`).

Delivery is at least once; effects are exactly once because every handler first claims the
message id in its service's inbox inside the same transaction as its writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
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

from contacts_shared.consumer import Consumer, raw_body
from contacts_shared.contracts import Contract, Envelope, envelope_for, reply_id
from contacts_shared.db import drain_on_notify
from contacts_shared.graceful import InFlight
from contacts_shared.handling import Subscription
from contacts_shared.observability import DEAD_LETTERS, OUTBOX_BACKLOG
from contacts_shared.outbox import (
    RELAY_BATCH,
    OutboxRelay,
    Unroutable,
    count_unroutable,
    publish_envelope,
)
from contacts_shared.retry import RETRY_SECONDS, retry_queue_for

log = structlog.get_logger("contacts.bus")

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

def exchange_for(namespace: str, *, declare: bool = True) -> RabbitExchange:
    """The namespace's exchange; `declare=False` only looks it up (passively), which needs no
    `configure` permission: other systems' users publish on it without being able to change it."""
    return RabbitExchange(f"{namespace}contacts", type=ExchangeType.TOPIC, durable=True, declare=declare)


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
        self.pool = pool
        self.consumer = Consumer(self.broker, pool, queue=self.queue, dead_letters=self.dead_letters, retry_queue=self.retry_queue)
        self.database = self.consumer.database
        self.relay = OutboxRelay(pool, self.broker, self.exchange)
        self._relay_task: asyncio.Task[None] | None = None
        self._relay_batches = InFlight()

    def handle_all(self, subscriptions: Iterable[Subscription], dependencies: Mapping[str, Any] | None = None) -> None:
        """Consume the messages of `subscriptions`; `dependencies` by name, for handlers that
        need more than the message (`handling.Subscription.bound`). Every handler may answer the
        message it handles (`reply`)."""
        self.consumer.subscribe(subscriptions, {"reply": self.reply, **(dependencies or {})})

    async def start(self) -> None:
        self.broker.subscriber(self.queue, ack_policy=AckPolicy.MANUAL, decoder=raw_body)(self.consumer.on_message)
        await self.broker.connect()
        await self.broker.declare_queue(self.dead_letters)
        await self.broker.declare_queue(self.retry_queue)
        queue = await self.broker.declare_queue(self.queue)
        exchange = await self.broker.declare_exchange(self.exchange)
        for key, subscription in self.consumer.subscriptions.items():
            for binding_key in subscription.binding_keys:
                await queue.bind(exchange, routing_key=binding_key)
            if key not in subscription.binding_keys:
                # Bound by narrower keys: the binding by its type (an earlier release's) goes.
                await queue.unbind(exchange, routing_key=key)
        await self.broker.start()
        channel = await self.pool.fetchval("SELECT current_schema() || '_outbox'")
        self._relay_task = asyncio.create_task(
            drain_on_notify(self.pool, channel, lambda: self._relay_batches.run(self.relay.relay_once), batch=RELAY_BATCH),
            name="outbox-relay",
        )

    async def stop_consuming(self) -> None:
        """Cancel the consumers, then wait (up to GRACE_SECONDS) for the messages being handled:
        each one commits and is acked, or rolls back and goes back to the queue unacked."""
        self.consumer.stopping = True
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
        await self._publish_confirmed([envelope_for(m) for m in messages])

    async def reply(self, to: Envelope, message: Contract) -> None:
        """Publish `message` in answer to the message `to`, confirmed as `publish_now`, for an
        answer that follows no write of ours (a verdict on what was read), hence needs no outbox.
        Its id is derived from `to`'s: answered twice (a redelivery), it is the same message,
        which its consumer's inbox takes once."""
        await self._publish_confirmed([envelope_for(message, reply_id(to, message))])

    async def _publish_confirmed(self, envelopes: list[Envelope]) -> None:
        routed = await asyncio.gather(*(publish_envelope(self.broker, self.exchange, e) for e in envelopes))
        returned = [e for e, ok in zip(envelopes, routed, strict=True) if not ok]
        failed = [(e.type, e.message_id) for e in returned if count_unroutable(e.type, e.model_dump_json())]
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

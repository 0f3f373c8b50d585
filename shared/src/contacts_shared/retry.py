"""Retries of a message whose handler failed, outside the consumer, counted by ourselves.

A failed message is published again, confirmed, into the retry queue of its service and then
acknowledged: the retry queue holds it for RETRY_SECONDS (`x-message-ttl`), then dead-letters it
back into the service's queue through the default exchange. One retry queue, one delay: every
message in it waits the same, so none waits behind a longer one, and a quorum queue per delay
would cost the broker a Raft group each. Its attempt count and its routing
key travel in headers. So a failing message never holds a consumer or the head of its queue
while it waits, and the count never depends on the broker counting `basic.nack` (RabbitMQ 4.3
stopped counting it toward a quorum queue's delivery limit); the same on RabbitMQ 3.x and 4.x.

The headers are trusted only on a message that came back from a retry queue: it is then
routed by the service's queue name, through the default exchange, which no other system may
write to (docs/integration.md gives them the topic exchange only). A publisher cannot set
them on its own messages to skip attempts or to pass for another routing key.
"""

from __future__ import annotations

from typing import Any

from faststream.rabbit import QueueType, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage

# Attempts before a failing message is dead-lettered with its last error, and the seconds it
# waits between two (about 35 s from the first try to the dead letter).
MAX_ATTEMPTS = 8
RETRY_SECONDS = 5
ATTEMPT_HEADER = "x-contacts-attempt"
ROUTING_KEY_HEADER = "x-contacts-routing-key"


def retry_queue_for(target: RabbitQueue, delay: int = RETRY_SECONDS) -> RabbitQueue:
    """The queue where a message of `target` waits `delay` seconds before going back to it."""
    return RabbitQueue(
        f"{target.name}.retry",
        queue_type=QueueType.QUORUM,
        durable=True,
        arguments={
            "x-message-ttl": delay * 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": target.name,
            # Moved back only once the service's queue has it (quorum queues' at-least-once
            # dead-lettering, which needs reject-publish).
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


def came_back(message: RabbitMessage, queue: RabbitQueue) -> bool:
    """Whether the message returns from a retry queue (routed by the queue's own name)."""
    return message.raw_message.routing_key == queue.name and message.raw_message.exchange == ""


def routing_key_of(message: RabbitMessage, queue: RabbitQueue) -> str:
    """The routing key the message was published with (kept in a header on its way back)."""
    if came_back(message, queue):
        return str((message.headers or {}).get(ROUTING_KEY_HEADER, ""))
    return message.raw_message.routing_key or ""


def failures_so_far(message: RabbitMessage, queue: RabbitQueue) -> int:
    if not came_back(message, queue):
        return 0
    value = (message.headers or {}).get(ATTEMPT_HEADER, 0)
    return value if isinstance(value, int) and value >= 0 else 0


async def publish_copy(
    broker: RabbitBroker, message: RabbitMessage, queue: RabbitQueue, headers: dict[str, Any], message_id: str | None
) -> None:
    """Publish `message` into `queue` (through the default exchange) as it came: its body, the
    publisher's headers and properties, plus `headers`; confirmed when this returns."""
    raw = message.raw_message
    await broker.publish(
        message.body,
        queue=queue,
        persist=True,
        headers={**(raw.headers or {}), **headers},
        message_id=message_id,
        content_type=raw.content_type,
        content_encoding=raw.content_encoding,
        correlation_id=raw.correlation_id,
        reply_to=raw.reply_to,
        message_type=raw.type,
        timestamp=raw.timestamp,
    )


async def retry_later(broker: RabbitBroker, retry_queue: RabbitQueue, message: RabbitMessage, routing_key: str, failures: int) -> None:
    """Publish the message, unchanged but for the two headers, into `retry_queue`."""
    headers = {ATTEMPT_HEADER: failures, ROUTING_KEY_HEADER: routing_key}
    await publish_copy(broker, message, retry_queue, headers, message.raw_message.message_id)

"""The consumer of a service's queue: each message is parsed (a malformed one is dead-lettered
with the reason), dispatched by routing key to its handler, claimed in the inbox in the handler's
transaction and acked after the commit. A database outage is waited out without counting; any
other failure is retried through the retry queue (`contacts_shared.retry`), then dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage

from contacts_shared.contracts import Envelope, MalformedMessage, parse_message
from contacts_shared.crashpoints import crash_point
from contacts_shared.db import DatabaseGate, claim_message, is_database_outage
from contacts_shared.observability import MESSAGE_SECONDS, MESSAGES_HANDLED
from contacts_shared.retry import (
    MAX_ATTEMPTS,
    failures_so_far,
    publish_copy,
    retry_later,
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


# No message of the contracts comes near this; a bigger body is abuse or a bug upstream and is
# dead-lettered unparsed rather than held in memory and validated.
MAX_BODY_BYTES = 1024 * 1024


class Consumer:
    """Handles what arrives on `queue` with `handlers` (routing key -> handler)."""

    def __init__(
        self,
        broker: RabbitBroker,
        pool: asyncpg.Pool,
        handlers: dict[str, Handler],
        *,
        queue: RabbitQueue,
        dead_letters: RabbitQueue,
        retry_queue: RabbitQueue,
    ) -> None:
        self.broker = broker
        self.pool = pool
        self.handlers = handlers
        self.queue = queue
        self.dead_letters = dead_letters
        self.retry_queue = retry_queue
        # Messages that found the database unreachable wait here, held, until it answers.
        self.database = DatabaseGate(pool)
        # Set at shutdown: a failing message goes back to the queue as it is.
        self.stopping = False

    async def on_message(self, body: bytes) -> None:
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
            handler = self.handlers.get(routing_key)
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
                if is_database_outage(exc) and not self.stopping:
                    # Not an attempt: the message is held (unacked, uncounted) and tried again
                    # once the database answers; /readyz says not ready meanwhile.
                    if self.database.reachable:
                        bound.warning("database unreachable, holding messages", reason=f"{type(exc).__name__}: {exc}"[:200])
                    await self.database.wait_until_back()
                    continue
                await self._failed(message, routing_key, envelope, exc, bound)
                return
        crash_point("after-commit-before-ack")
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
        if self.stopping:
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


async def raw_body(message: Any) -> bytes:
    # Parsing is ours, so that a malformed body becomes a dead letter with a reason.
    return message.body

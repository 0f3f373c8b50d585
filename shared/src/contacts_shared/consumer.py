"""The consumer of a service's queue: every message goes through the same steps around its
handler, in this order (outermost first):

1. parse: a message that cannot be understood (no handler for its routing key, too big, a bad
   envelope or data) is dead-lettered with the reason and acked; nothing else sees it;
2. observe: the outcome is counted (metrics) and logged;
3. settle: the message is acked once its effects are committed (or left to the nack below);
4. skip_unconcerned: a message its subscription's filter says no to is done with, untouched;
5. retry_failures: a failing handler's message is published to the retry queue
   (`contacts_shared.retry`), dead-lettered after MAX_ATTEMPTS;
6. wait_out_outages: a database outage is waited out, not counted as an attempt;
7. claim: the handler runs with the message claimed in the inbox, in its transaction, by its
   own single statement, or by the statement that saves its effects (`handling.Runs`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any

import asyncpg
import structlog
from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage

from contacts_shared.contracts import (
    Contract,
    Envelope,
    MalformedMessage,
    parse_message,
)
from contacts_shared.crashpoints import crash_point
from contacts_shared.db import DatabaseGate, claim_message, is_database_outage
from contacts_shared.handling import (
    AlreadyClaimed,
    Runs,
    Subscription,
    by_routing_key,
    claim_pending,
)
from contacts_shared.observability import MESSAGE_SECONDS, MESSAGES_HANDLED
from contacts_shared.retry import (
    MAX_ATTEMPTS,
    failures_so_far,
    publish_copy,
    retry_later,
    routing_key_of,
)

log = structlog.get_logger("contacts.bus")

# No message of the contracts comes near this; a bigger body is abuse or a bug upstream and is
# dead-lettered unparsed rather than held in memory and validated.
MAX_BODY_BYTES = 1024 * 1024


class Outcome(StrEnum):
    """What became of a message (the label of `contacts_messages_handled_total`)."""

    handled = "handled"
    duplicate = "duplicate"  # claimed before: nothing done again
    nothing_to_do = "nothing_to_do"  # its subscription's filter said no
    retried = "retried"
    dead_lettered = "dead_lettered"
    requeued = "requeued"  # given back to the broker (stopping, or the broker away): not counted


@dataclass(frozen=True)
class Delivery:
    """One parsed message on its way through the steps."""

    message: RabbitMessage
    routing_key: str
    envelope: Envelope
    data: Contract
    subscription: Subscription
    handler: Callable[[asyncpg.Connection, Envelope, Any], Awaitable[Any]]
    log: Any  # the logger bound to the message's routing key and AMQP id


Next = Callable[[Delivery], Awaitable[Outcome]]
Step = Callable[[Delivery, Next], Awaitable[Outcome]]


def pipeline(steps: Sequence[Step], last: Next) -> Next:
    """`steps` around `last`, the first outermost."""
    run = last
    for step in reversed(steps):
        run = partial(step, then=run)  # type: ignore[call-arg]
    return run


class Consumer:
    """Handles what arrives on `queue` with `subscriptions`, each handler bound to what it needs
    of `dependencies` (`Subscription.bound`)."""

    def __init__(
        self,
        broker: RabbitBroker,
        pool: asyncpg.Pool,
        *,
        queue: RabbitQueue,
        dead_letters: RabbitQueue,
        retry_queue: RabbitQueue,
    ) -> None:
        self.broker = broker
        self.pool = pool
        self.subscriptions: dict[str, Subscription] = {}
        self.types_by_key: dict[str, str] = {}  # binding key -> routing key of the type
        self.handlers: dict[str, Callable[[asyncpg.Connection, Envelope, Any], Awaitable[Any]]] = {}
        self.queue = queue
        self.dead_letters = dead_letters
        self.retry_queue = retry_queue
        # Messages that found the database unreachable wait here, held, until it answers.
        self.database = DatabaseGate(pool)
        # Set at shutdown: a failing message goes back to the queue as it is.
        self.stopping = False
        self.run = pipeline(
            (self.observe, self.settle, self.skip_unconcerned, self.retry_failures, self.wait_out_outages), self.claim
        )

    def subscribe(self, subscriptions: Iterable[Subscription], dependencies: Mapping[str, Any]) -> None:
        for key, subscription in by_routing_key(subscriptions).items():
            self.handlers[key] = subscription.bound(dependencies)
            self.subscriptions[key] = subscription
            for binding_key in subscription.binding_keys:
                self.types_by_key[binding_key] = key

    # --- 1. parse ---------------------------------------------------------------------------------

    async def on_message(self, body: bytes) -> None:
        # Taken from the broker's context, not injected as a parameter: FastStream resolves an
        # injected context value in a worker thread, a thread hop per message (bench/README.md).
        message: RabbitMessage = self.broker.context.get_local("message")
        # A message published with a narrower key it is bound by (an operator publishing a dead
        # letter again by its state) is the type it carries.
        routing_key = routing_key_of(message, self.queue)
        routing_key = self.types_by_key.get(routing_key, routing_key)
        # The publisher's own id: the AMQP property, else the envelope's (clients such as
        # amqp-tools cannot set the property; FastStream would make one up).
        message_id = message.raw_message.message_id or envelope_message_id(body)
        bound = log.bind(routing_key=routing_key, amqp_message_id=message_id)
        try:
            subscription = self.subscriptions.get(routing_key)
            if subscription is None:
                raise MalformedMessage(f"this service does not consume routing key {routing_key!r}")
            if len(body) > MAX_BODY_BYTES:
                raise MalformedMessage(f"body of {len(body)} bytes is larger than {MAX_BODY_BYTES} bytes")
            envelope, data = parse_message(body, routing_key)
        except MalformedMessage as exc:
            await self._dead_letter(message, routing_key, message_id, str(exc))
            bound.warning("message dead-lettered", reason=str(exc))
            MESSAGES_HANDLED.labels(routing_key, Outcome.dead_lettered.value).inc()
            await message.ack()
            return
        delivery = Delivery(message, routing_key, envelope, data, subscription, self.handlers[routing_key], bound)
        # Every log line written while handling it (handlers' included) carries its message_id.
        with structlog.contextvars.bound_contextvars(message_id=str(envelope.message_id)):
            await self.run(delivery)

    # --- 2. to 6., the steps around every handler --------------------------------------------------

    async def observe(self, delivery: Delivery, then: Next) -> Outcome:
        started = time.monotonic()
        outcome = await then(delivery)
        if outcome is not Outcome.requeued:
            MESSAGES_HANDLED.labels(delivery.routing_key, outcome.value).inc()
        if outcome in (Outcome.handled, Outcome.duplicate):
            MESSAGE_SECONDS.labels(delivery.routing_key).observe(time.monotonic() - started)
            delivery.log.info("message handled" if outcome is Outcome.handled else "duplicate message skipped")
        return outcome

    async def settle(self, delivery: Delivery, then: Next) -> Outcome:
        outcome = await then(delivery)
        if outcome is Outcome.requeued:
            return outcome  # nacked already
        if outcome in (Outcome.handled, Outcome.duplicate):
            crash_point("after-commit-before-ack")
        await delivery.message.ack()
        return outcome

    async def skip_unconcerned(self, delivery: Delivery, then: Next) -> Outcome:
        concerns = delivery.subscription.concerns
        if concerns is not None and not concerns(delivery.data):
            return Outcome.nothing_to_do
        return await then(delivery)

    async def retry_failures(self, delivery: Delivery, then: Next) -> Outcome:
        """Any failure but an outage: retry later through the retry queue, or dead-letter the
        message after MAX_ATTEMPTS; at shutdown it goes back to the queue as it is."""
        try:
            return await then(delivery)
        except Exception as exc:  # noqa: BLE001 - whatever the handler raised
            message = delivery.message
            failures = failures_so_far(message, self.queue) + 1
            reason = f"{type(exc).__name__}: {exc}"[:500]
            if self.stopping:
                await message.nack(requeue=True)  # handled again by a replica or after the restart
                return Outcome.requeued
            if failures >= MAX_ATTEMPTS:
                last = f"failed {failures} times, last: {reason}"
                await self._dead_letter(message, delivery.routing_key, str(delivery.envelope.message_id), last)
                delivery.log.error("message dead-lettered after retries", attempts=failures, reason=reason)
                return Outcome.dead_lettered
            try:
                await retry_later(self.broker, self.retry_queue, message, delivery.routing_key, failures)
            except Exception:  # noqa: BLE001 - the broker is away: the message goes back as it is
                await asyncio.sleep(1.0)
                await message.nack(requeue=True)
                return Outcome.requeued
            retry_in = self.retry_queue.arguments["x-message-ttl"] / 1000  # type: ignore[index]
            delivery.log.warning("handler failed, will retry", attempts=failures, retry_in=retry_in, reason=reason)
            return Outcome.retried

    async def wait_out_outages(self, delivery: Delivery, then: Next) -> Outcome:
        """Not an attempt: the message is held (unacked, uncounted) and tried again once the
        database answers; /readyz says not ready meanwhile."""
        while True:
            try:
                return await then(delivery)
            except Exception as exc:
                if not is_database_outage(exc) or self.stopping:
                    raise
                if self.database.reachable:
                    delivery.log.warning("database unreachable, holding messages", reason=f"{type(exc).__name__}: {exc}"[:200])
                await self.database.wait_until_back()

    # --- 7. claim ----------------------------------------------------------------------------------

    async def claim(self, delivery: Delivery) -> Outcome:
        """Run the handler, claiming the message in the inbox; a duplicate if claimed before."""
        envelope, data = delivery.envelope, delivery.data
        if delivery.subscription.runs is Runs.claims_itself:
            async with self.pool.acquire() as conn:
                fresh = await delivery.handler(conn, envelope, data)
        elif delivery.subscription.runs is Runs.answers_only:
            async with self.pool.acquire() as conn:
                await delivery.handler(conn, envelope, data)
            fresh = True
        elif delivery.subscription.runs is Runs.claimed_on_save:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    with claim_pending(conn, envelope.message_id, delivery.routing_key) as pending:
                        await delivery.handler(conn, envelope, data)
                    if not pending.taken and not await claim_message(conn, envelope.message_id, delivery.routing_key):
                        raise AlreadyClaimed
                fresh = True
            except AlreadyClaimed:
                fresh = False
        else:
            async with self.pool.acquire() as conn, conn.transaction():
                fresh = await claim_message(conn, envelope.message_id, delivery.routing_key)
                if fresh:
                    await delivery.handler(conn, envelope, data)
        return Outcome.handled if fresh else Outcome.duplicate

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

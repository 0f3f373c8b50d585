"""The transactional outbox: messages are written in the transaction of the change that causes
them (`enqueue`, or `queue_in` as part of a bigger statement), then a relay publishes them with publisher confirms and
deletes them in one transaction (`OutboxRelay`); a message RabbitMQ returns as unroutable stays.

Publishing itself (`publish_envelope`, `publish_body`) is here too: every message of ours goes
out persistent, confirmed, and `mandatory`, so that a return is seen.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg
import structlog
from faststream.rabbit import RabbitBroker, RabbitExchange

from contacts_shared.contracts import (
    STATE_CHANGED,
    Contract,
    Envelope,
    RequestState,
    also_routed_by,
    envelope_for,
    state_key,
)
from contacts_shared.crashpoints import crash_point
from contacts_shared.observability import MESSAGES_UNROUTABLE, OUTBOX_PUBLISHED
from contacts_shared.statement import Statement

log = structlog.get_logger("contacts.outbox")

# Outbox rows published per relay transaction.
RELAY_BATCH = 200

# A routing key whose message RabbitMQ returned as unroutable is held back by the relay, then
# retried with its oldest row alone, after 0.2 s, doubling up to 5 s.
UNROUTABLE_RETRY_SECONDS = 0.2
UNROUTABLE_RETRY_MAX_SECONDS = 5.0

# The keys no service of ours binds: a message routed by these only is for other systems, and
# RabbitMQ returns it when no other system has bound a queue to it; that is no failure
# (docs/integration.md: a message reaches only the queues bound when it is published). Any other
# message has a consumer among the services, so its return means that service's queue is not
# there yet (or lost its binding): the message is not delivered, and is kept and retried. State
# changes are routed by their state too (`also_routed_by`); the notifier binds the states it
# mails on, so the others and the bare type are other systems' only.
FOR_OTHER_SYSTEMS_ONLY = frozenset(
    {
        "contact_change.completed",
        "contact_change.support_acted",
        STATE_CHANGED,
        *(state_key(state) for state in (RequestState.checking, RequestState.validating, RequestState.applying)),
    }
)


def heard_by_us(routing_key: str, body: str) -> bool:
    """Whether a service of ours binds one of the keys the message is routed by."""
    return not {routing_key, *also_routed_by(routing_key, body)} <= FOR_OTHER_SYSTEMS_ONLY


async def publish_envelope(broker: RabbitBroker, exchange: RabbitExchange, envelope: Envelope) -> bool:
    """Publish one envelope, persistent, with confirm; False if RabbitMQ returned it (see `publish_body`)."""
    return await publish_body(broker, exchange, envelope.type, envelope.message_id, envelope.model_dump_json())


async def publish_body(broker: RabbitBroker, exchange: RabbitExchange, routing_key: str, message_id: uuid.UUID, body: str) -> bool:
    """Publish an envelope already serialised (as the outbox holds it), persistent, with confirm.

    Raises if the broker does not confirm it. Returns False if the broker returned it as
    unroutable (no queue is bound to `routing_key`): the message went nowhere. It is published
    `mandatory` (FastStream's default), and the channel does not raise on a return, so aio-pika
    resolves the publish with the returned message (aiormq's DeliveredMessage, whose `delivery`
    is the Basic.Return frame) instead of the confirm's Basic.Ack, and ignores the Basic.Ack
    that follows. The keys it is also routed by go in its `BCC` header (`also_routed_by`)."""
    also = also_routed_by(routing_key, body)
    result = await broker.publish(
        body.encode(),
        exchange=exchange,
        routing_key=routing_key,
        persist=True,
        message_id=str(message_id),
        content_type="application/json",
        headers={"BCC": list(also)} if also else None,
    )
    return getattr(result, "delivery", None) is None


class Unroutable(Exception):
    """RabbitMQ returned messages: no queue is bound to their routing key."""

    def __init__(self, returned: list[tuple[str, uuid.UUID]]) -> None:
        self.returned = returned
        super().__init__(
            "RabbitMQ returned as unroutable (no queue bound): "
            + ", ".join(f"{key} (message_id {message_id})" for key, message_id in returned)
        )


def count_unroutable(routing_key: str, body: str) -> bool:
    """Count one return; True if it is a failure (a message a service of ours should get)."""
    MESSAGES_UNROUTABLE.labels(routing_key).inc()
    return heard_by_us(routing_key, body)


@dataclass
class _Held:
    """A routing key whose message was returned: its rows wait until `until` (time.monotonic)."""

    returns: int
    until: float


# The oldest rows of the outbox, as `relay_once` takes them, locked and deleted in the
# transaction that publishes them (`id`, `created_at`: to put back a row that was returned).
_TAKE_BATCH = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, message_id, routing_key, body, created_at"
)
# The same while some routing keys are held back ($2): their rows are skipped, except the oldest
# row of each key whose wait is over ($3, a subset of $2), published alone to see if it routes now.
_TAKE_BATCH_HOLDING = (
    "WITH free AS (SELECT id FROM outbox WHERE routing_key <> ALL($2::text[]) ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED),"
    " probe AS (SELECT oldest.id FROM unnest($3::text[]) AS k(key) CROSS JOIN LATERAL"
    " (SELECT id FROM outbox WHERE routing_key = k.key ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) AS oldest)"
    " DELETE FROM outbox WHERE id IN (SELECT id FROM free UNION ALL SELECT id FROM probe)"
    " RETURNING id, message_id, routing_key, body, created_at"
)
# Rows returned as unroutable go back, as they were (same id, hence the same place in the order).
_PUT_BACK_COLUMNS = ("id", "message_id", "routing_key", "body", "created_at")
_PUT_BACK = (
    "INSERT INTO outbox (id, message_id, routing_key, body, created_at)"
    " SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[])"
)


# The outbox rows of a statement, from three arrays ($1 message ids, $2 routing keys, $3 bodies),
# and the NOTIFY that wakes the relay at commit: in the statement that queues them, so queueing
# costs one round trip however many messages there are.
_QUEUE_ROWS = (
    "INSERT INTO outbox (message_id, routing_key, body) SELECT m, k, b FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(m, k, b)"
)
_RELAY_CHANNEL = "current_schema() || '_outbox'"
_WAKE_RELAY = f"pg_notify({_RELAY_CHANNEL}, '')"


def _outbox_rows(messages: tuple[Contract, ...]) -> tuple[list[uuid.UUID], list[str], list[str]]:
    envelopes = [envelope_for(data) for data in messages]
    return [e.message_id for e in envelopes], [e.type for e in envelopes], [e.model_dump_json() for e in envelopes]


def queue_in(statement: Statement, messages: list[Contract]) -> None:
    """Queue `messages` in the outbox as part of `statement`, which wakes the relay at commit."""
    if messages:
        statement.add(_QUEUE_ROWS, *_outbox_rows(tuple(messages)))
        statement.wake = _RELAY_CHANNEL


async def enqueue(conn: asyncpg.Connection, *messages: Contract) -> list[uuid.UUID]:
    """Put messages in the outbox inside the caller's transaction; the relay publishes them."""
    ids, keys, bodies = _outbox_rows(messages)
    await conn.execute(f"WITH queued AS ({_QUEUE_ROWS}) SELECT FROM {_WAKE_RELAY}", ids, keys, bodies)
    return ids


class OutboxRelay:
    """Publishes one service's outbox; `relay_once` is one pass (one transaction)."""

    def __init__(self, pool: asyncpg.Pool, broker: RabbitBroker, exchange: RabbitExchange) -> None:
        self.pool = pool
        self.broker = broker
        self.exchange = exchange
        # Routing keys whose messages RabbitMQ returned, held back by this process's relay.
        self._held: dict[str, _Held] = {}

    async def relay_once(self, batch: int = RELAY_BATCH) -> int:
        """Publish one batch of the outbox (with confirms), then delete it; returns its size.

        A row RabbitMQ returns as unroutable (no queue bound to its routing key: the consuming
        service never ran in this namespace, or its binding is gone) is not deleted: it goes back
        to the outbox, and its routing key is held back by this relay (rows of other keys go on)
        until a retry of that key's oldest row alone, after 0.2 s doubling up to 5 s, routes."""
        now = time.monotonic()
        due = [key for key, held in self._held.items() if held.until <= now]
        async with self.pool.acquire() as conn, conn.transaction():
            # Deleted first, in the transaction that stays open while the batch is published:
            # the rows stay locked (replicas skip them) and come back if publishing fails or the
            # process dies before the commit. A crash after publishing and before the commit
            # republishes the batch; consumers' inboxes make that harmless. One statement where a
            # SELECT ... FOR UPDATE then a DELETE took two.
            if self._held:
                rows = await conn.fetch(_TAKE_BATCH_HOLDING, batch, list(self._held), due)
            else:
                rows = await conn.fetch(_TAKE_BATCH, batch)
            if not rows:
                for key in due:  # nothing of it is left (another relay published it)
                    del self._held[key]
                return 0
            # Published in id order as written: the body was serialised from the contract's model
            # by `enqueue`, no need to parse and serialise it again.
            rows = sorted(rows, key=lambda r: r["id"])
            routed = await asyncio.gather(
                *(publish_body(self.broker, self.exchange, r["routing_key"], r["message_id"], r["body"]) for r in rows)
            )
            crash_point("after-publish-before-delete")
            returned = [r for r, ok in zip(rows, routed, strict=True) if not ok]
            kept = [r for r in returned if heard_by_us(r["routing_key"], r["body"])]
            if kept:
                await conn.execute(_PUT_BACK, *([r[column] for r in kept] for column in _PUT_BACK_COLUMNS))
        for r in returned:
            count_unroutable(r["routing_key"], r["body"])
        self._hold_or_release(rows, kept, due, time.monotonic())
        OUTBOX_PUBLISHED.inc(len(rows) - len(kept))
        return len(rows)

    def _hold_or_release(self, rows: list[asyncpg.Record], kept: list[asyncpg.Record], due: list[str], now: float) -> None:
        """After a relay pass: hold back the routing keys of the rows kept (one more return each),
        release the held keys whose retry routed or found nothing left to retry."""
        returned_keys = {r["routing_key"] for r in kept}
        for key in returned_keys:
            held = self._held.get(key) or _Held(returns=0, until=now)
            held.returns += 1
            held.until = now + min(UNROUTABLE_RETRY_SECONDS * 2 ** (held.returns - 1), UNROUTABLE_RETRY_MAX_SECONDS)
            self._held[key] = held
        for r in kept:
            log.warning(
                "message unroutable, kept in the outbox",
                routing_key=r["routing_key"],
                amqp_message_id=str(r["message_id"]),
                retry_in=round(self._held[r["routing_key"]].until - now, 3),
            )
        for key in {*due, *(r["routing_key"] for r in rows)} - returned_keys:
            self._held.pop(key, None)

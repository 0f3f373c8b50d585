"""The outbox relay and `publish_now` when RabbitMQ returns a message as unroutable (no queue bound
to its routing key), against the real PostgreSQL and RabbitMQ: the row stays in the outbox, its
routing key is held back and retried alone with a growing pause, the rest goes on, and each
return is counted and logged without its body."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest
from contacts_shared.bus import ServiceBus
from contacts_shared.contracts import (
    ContactChangeCompleted,
    ContactChangeRequested,
    ContactChangeStateChanged,
    ContactChangeTokenIssued,
    Contract,
    RequestState,
    state_key,
)
from contacts_shared.outbox import (
    FOR_OTHER_SYSTEMS_ONLY,
    UNROUTABLE_RETRY_SECONDS,
    Unroutable,
    enqueue,
)
from contacts_tools.contract_docs import PRODUCERS, bound_keys
from contacts_tools.testing import publishing_bus, schema_pool
from prometheus_client import REGISTRY
from structlog.testing import capture_logs
from support import eventually, take_messages

AMQP_URL = os.environ.get("CONTACTS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
REQUESTED, STATE_CHANGED, COMPLETED, TOKEN_ISSUED = (
    "contact_change.requested",
    "contact_change.state_changed",
    "contact_change.completed",
    "contact_change.token_issued",
)


def example(model: type[Contract], **changes: Any) -> Contract:
    return model.model_validate({**model.model_config["json_schema_extra"]["examples"][0], **changes})  # type: ignore[index]


def returns(routing_key: str) -> float:
    return REGISTRY.get_sample_value("contacts_messages_unroutable_total", {"routing_key": routing_key}) or 0.0


class Listener:
    """A queue of our own on the test's exchange, bound to the routing keys we choose."""

    def __init__(self, queue: aio_pika.abc.AbstractQueue, exchange: str) -> None:
        self.queue, self.exchange = queue, exchange

    async def bind(self, routing_key: str) -> None:
        await self.queue.bind(self.exchange, routing_key)

    async def take(self, count: int) -> list[tuple[str, str]]:
        """The next `count` messages (routing key, message_id), in the order the queue has them."""
        return [(m.routing_key or "", str(m.message_id)) for m in await take_messages(self.queue, count)]


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("relay", []) as pool:
        yield pool


@pytest.fixture
async def bus(pool: asyncpg.Pool) -> AsyncIterator[ServiceBus]:
    """A service's bus, its relay run by the test (`publishing_bus`)."""
    async with publishing_bus(pool, "relay") as bus:
        yield bus


@pytest.fixture
async def listener(bus: ServiceBus) -> AsyncIterator[Listener]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        queue = await (await connection.channel()).declare_queue(exclusive=True, auto_delete=True)
        yield Listener(queue, bus.exchange.name)


async def outbox(pool: asyncpg.Pool) -> list[tuple[int, str, str]]:
    return [(r["id"], r["routing_key"], str(r["message_id"])) for r in await pool.fetch("SELECT * FROM outbox ORDER BY id")]


async def test_a_returned_row_stays_and_is_retried_alone_while_the_rest_goes_on(
    pool: asyncpg.Pool, bus: ServiceBus, listener: Listener
) -> None:
    await listener.bind(STATE_CHANGED)  # contact_change.requested: no queue bound yet
    async with pool.acquire() as conn:
        ids = await enqueue(
            conn,
            example(ContactChangeRequested),
            example(ContactChangeStateChanged),
            example(ContactChangeRequested, phase="apply"),
            example(ContactChangeCompleted),
            example(ContactChangeStateChanged, state="validating"),
        )
    ids = [str(i) for i in ids]
    before = await outbox(pool)
    counted = {key: returns(key) for key in (REQUESTED, COMPLETED)}

    # When each pass that met a return began: a key is held from the end of such a pass.
    returned_at = [time.monotonic()]
    with capture_logs() as logs:
        assert await bus.relay.relay_once() == 5
    # The two requested rows are back, as they were; the routed rows are gone, and so is the
    # completed one (only other systems consume it: none listening is no failure).
    assert await outbox(pool) == [before[0], before[2]]
    assert await listener.take(2) == [(STATE_CHANGED, ids[1]), (STATE_CHANGED, ids[4])]
    assert returns(REQUESTED) == counted[REQUESTED] + 2
    assert returns(COMPLETED) == counted[COMPLETED] + 1
    warnings = [e for e in logs if e["event"] == "message unroutable, kept in the outbox"]
    assert [(w["log_level"], w["routing_key"], w["amqp_message_id"]) for w in warnings] == [
        ("warning", REQUESTED, ids[0]),
        ("warning", REQUESTED, ids[2]),
    ]
    assert all(w["retry_in"] == UNROUTABLE_RETRY_SECONDS for w in warnings)
    assert not any("body" in e or "data" in e for e in logs), logs

    # Held back: rows written after them go out; the held ones wait for their retry.
    async with pool.acquire() as conn:
        (later,) = await enqueue(conn, example(ContactChangeStateChanged, state="done"))
    assert await bus.relay.relay_once() == 1
    assert await listener.take(1) == [(STATE_CHANGED, str(later))]

    # Retried with the oldest row alone, after a pause that doubles: still unroutable.
    for _ in range(2):
        seen = returns(REQUESTED)

        async def probed(seen: float = seen) -> bool:
            began = time.monotonic()
            taken = await bus.relay.relay_once()
            assert taken in (0, 1), taken  # never both held rows, never a spin through them
            if returns(REQUESTED) > seen:
                returned_at.append(began)
                return True
            return False

        await eventually(probed, what="a retry of the held routing key")
        assert returns(REQUESTED) == seen + 1
        assert await outbox(pool) == [before[0], before[2]]
    assert returned_at[1] - returned_at[0] >= UNROUTABLE_RETRY_SECONDS
    assert returned_at[2] - returned_at[1] >= 2 * UNROUTABLE_RETRY_SECONDS

    # Once a queue is bound, the retry routes, and the rest of that key follows in order.
    await listener.bind(REQUESTED)

    async def drained() -> bool:
        await bus.relay.relay_once()
        return not await outbox(pool)

    await eventually(drained, what="the outbox to drain")
    assert await listener.take(2) == [(REQUESTED, ids[0]), (REQUESTED, ids[2])]
    assert returns(REQUESTED) == seen + 1


async def test_publish_now_raises_when_a_message_is_returned(bus: ServiceBus, listener: Listener) -> None:
    issued = example(ContactChangeTokenIssued)
    seen = returns(TOKEN_ISSUED)
    with capture_logs() as logs, pytest.raises(Unroutable) as raised:
        await bus.publish_now(issued)
    assert TOKEN_ISSUED in str(raised.value)
    ((key, message_id),) = raised.value.returned
    assert key == TOKEN_ISSUED
    assert returns(TOKEN_ISSUED) == seen + 1
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["routing_key"] == TOKEN_ISSUED and warning["amqp_message_id"] == str(message_id)
    assert issued.token_hash not in json.dumps(logs) + str(raised.value)  # type: ignore[attr-defined]

    await listener.bind(TOKEN_ISSUED)
    await bus.publish_now(issued, example(ContactChangeCompleted))  # completed: nobody outside listens, no failure
    assert [key for key, _ in await listener.take(1)] == [TOKEN_ISSUED]


def test_only_messages_no_service_of_ours_consumes_may_go_unheard() -> None:
    """The keys whose return is no failure are exactly those the services publish (a state
    change's by its state too) and none of them binds: any other message would be lost for a
    consumer that is not there yet."""
    published = {*PRODUCERS, *(state_key(state) for state in RequestState)}
    assert published - bound_keys() == FOR_OTHER_SYSTEMS_ONLY

"""A state change is routed by its type and by its state (`contact_change.state_changed.<state>`,
in the `BCC` header), against the real PostgreSQL and RabbitMQ: a queue bound by states gets
those only, as the type it was published with; one bound by its type, as other systems are,
gets them all; a state no service of ours binds may go unheard, one the notifier binds is kept
until its queue is there; a service bound by states drops the binding by type that an earlier
release made, and takes a message published with a state's key as its type."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest
from contacts_shared.bus import ServiceBus
from contacts_shared.contracts import (
    STATE_CHANGED,
    ContactChangeStateChanged,
    Envelope,
    envelope_for,
    state_key,
)
from contacts_shared.handling import on
from contacts_shared.outbox import enqueue
from contacts_tools.testing import (
    TEST_AMQP_URL,
    consuming_bus,
    publishing_bus,
    schema_pool,
)
from prometheus_client import REGISTRY
from support import eventually, take_messages


def state_changed(state: str) -> ContactChangeStateChanged:
    example = ContactChangeStateChanged.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    return ContactChangeStateChanged.model_validate({**example, "state": state})


def returns() -> float:
    return REGISTRY.get_sample_value("contacts_messages_unroutable_total", {"routing_key": STATE_CHANGED}) or 0.0


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("by_state", []) as pool:
        yield pool


@pytest.fixture
async def bus(pool: asyncpg.Pool) -> AsyncIterator[ServiceBus]:
    """A publishing service's bus, its relay run by the test (`publishing_bus`)."""
    async with publishing_bus(pool, "publisher") as bus:
        yield bus


@pytest.fixture
async def queues(bus: ServiceBus) -> AsyncIterator[tuple[aio_pika.abc.AbstractQueue, aio_pika.abc.AbstractQueue]]:
    """Two queues of our own: one bound by the state `done`, one by the type."""
    connection = await aio_pika.connect(TEST_AMQP_URL)
    async with connection:
        channel = await connection.channel()
        by_state = await channel.declare_queue(exclusive=True, auto_delete=True)
        by_type = await channel.declare_queue(exclusive=True, auto_delete=True)
        await by_state.bind(bus.exchange.name, state_key("done"))
        await by_type.bind(bus.exchange.name, STATE_CHANGED)
        yield by_state, by_type


async def test_a_queue_bound_by_a_state_gets_that_state_only_as_the_type_it_was_published_with(
    pool: asyncpg.Pool, bus: ServiceBus, queues: tuple[aio_pika.abc.AbstractQueue, aio_pika.abc.AbstractQueue]
) -> None:
    by_state, by_type = queues
    async with pool.acquire() as conn:
        ids = [str(i) for i in await enqueue(conn, state_changed("checking"), state_changed("done"), state_changed("applying"))]
    assert await bus.relay.relay_once() == 3

    (done,) = await take_messages(by_state, 1)
    assert (done.routing_key, done.message_id) == (STATE_CHANGED, ids[1])
    assert "BCC" not in (done.headers or {})  # RabbitMQ strips it: consumers see the message as published
    assert [m.message_id for m in await take_messages(by_type, 3)] == ids


async def test_a_state_no_service_binds_may_go_unheard_one_the_notifier_binds_waits_for_its_queue(pool: asyncpg.Pool, bus: ServiceBus) -> None:
    async with pool.acquire() as conn:
        await enqueue(conn, state_changed("validating"))
        (declined,) = await enqueue(conn, state_changed("declined"))
    before = returns()
    assert await bus.relay.relay_once() == 2
    # Both returned (no queue at all); only the one the notifier mails on is kept.
    assert returns() == before + 2
    assert [r["message_id"] for r in await pool.fetch("SELECT message_id FROM outbox")] == [declined]


async def test_a_service_bound_by_states_drops_its_binding_by_type(pool: asyncpg.Pool, bus: ServiceBus) -> None:
    heard: list[tuple[str, str]] = []

    async def handle(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeStateChanged) -> None:
        heard.append((envelope.type, data.state.value))

    namespace = bus.exchange.name.removesuffix("contacts")
    # An earlier release bound the queue by the type; this one binds it by the state `done`.
    earlier = ServiceBus(amqp_url=TEST_AMQP_URL, namespace=namespace, service="listening", pool=pool)
    earlier.handle_all([on(ContactChangeStateChanged, handle)])
    await earlier.start()
    await earlier.stop_consuming()
    await earlier.stop()
    subscription: Any = on(ContactChangeStateChanged, handle, bound_by=[state_key("done")])
    async with consuming_bus(pool, "listening", [subscription], namespace=namespace):
        before = returns()
        await bus.publish_now(state_changed("checking"), state_changed("done"))
        assert returns() == before + 1  # `checking` reached no queue: the binding by type is gone

        async def done_heard() -> bool:
            return bool(heard)

        await eventually(done_heard, what="the done state handled")
        assert heard == [(STATE_CHANGED, "done")]

        # Published again by its state's key, as an operator does with a dead letter: taken as its type.
        again = envelope_for(state_changed("done"))
        await bus.broker.publish(again.model_dump_json().encode(), exchange=bus.exchange, routing_key=state_key("done"), message_id=str(again.message_id))

        async def again_heard() -> bool:
            return len(heard) == 2

        await eventually(again_heard, what="the message published by its state's key handled")
        assert heard[1] == (STATE_CHANGED, "done")

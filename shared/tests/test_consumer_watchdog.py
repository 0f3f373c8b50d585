"""A process connected to RabbitMQ whose consumer is gone (the channel lives, the consumer was
lost without aio-pika recovering it) says so on readiness, and its watchdog stops it with exit
code 1 for its supervisor to restart it. Real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import asyncpg
import pytest
from contacts_shared import runtime as runtime_module
from contacts_shared.bus import ServiceBus
from contacts_shared.contracts import AccountUpserted
from contacts_shared.handling import on
from contacts_shared.runtime import Runtime, watch_consumer
from contacts_tools.testing import consuming_bus, schema_pool
from support import eventually


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("watchdog", []) as pool:
        yield pool


@pytest.fixture
async def bus(pool: asyncpg.Pool) -> AsyncIterator[ServiceBus]:
    async def nothing(*_: object) -> None:
        return None

    async with consuming_bus(pool, "watchdog", [on(AccountUpserted, nothing)]) as bus:
        yield bus


async def lose_the_consumer(bus: ServiceBus) -> None:
    """Cancel the consumer on its channel behind aio-pika's back, as a failed recovery leaves it."""
    (subscriber,) = bus.broker.subscribers
    channel = await subscriber._queue_obj.channel.get_underlay_channel()  # type: ignore[attr-defined]
    await channel.basic_cancel(subscriber._consumer_tag)  # type: ignore[attr-defined]


async def test_a_lost_consumer_is_not_ready_and_the_watchdog_stops_the_service(
    bus: ServiceBus, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Runtime(service="watchdog", pool=pool, bus=bus)
    assert await runtime.ready() == {"database": True, "broker": True}
    monkeypatch.setattr(runtime_module, "WATCH_SECONDS", 0.1)
    monkeypatch.setattr(runtime_module, "CONSUMER_LOST_SECONDS", 1.0)
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    try:
        watchdog = asyncio.create_task(watch_consumer(runtime))
        await asyncio.sleep(0.3)
        assert not stopped.is_set()  # consuming: nothing to do

        await lose_the_consumer(bus)

        assert await runtime.ready() == {"database": True, "broker": False}
        assert not await bus.ready()
        await eventually(lambda: stopped.wait(), timeout=5, what="the watchdog to stop the service")
        await watchdog
        assert runtime.exit_code == 1
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)

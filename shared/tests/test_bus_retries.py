"""How the consumer treats a failing handler, against the real PostgreSQL and RabbitMQ: a failed
message waits in a retry queue while the others flow, counted by our own header (never by the
broker's nack count), and is dead-lettered with its last error after MAX_ATTEMPTS; a database
outage is waited out without counting; a publisher cannot forge the retry headers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import asyncpg
import pytest
from contacts_shared.bus import ServiceBus
from contacts_shared.contracts import AccountUpserted, Envelope, envelope_for
from contacts_shared.handling import on
from contacts_shared.outbox import publish_envelope
from contacts_shared.retry import ATTEMPT_HEADER, MAX_ATTEMPTS, ROUTING_KEY_HEADER
from contacts_tools.testing import TEST_AMQP_URL, consuming_bus, schema_pool
from support import eventually

KEY = "account.upserted"


async def until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    async def holds() -> bool:
        return predicate()

    await eventually(holds, timeout=timeout, what=what, interval=0.05)


def account(nic: str) -> AccountUpserted:
    return AccountUpserted(nic=nic, email=f"{nic}@example.test", zone="EU")


class Handled:
    """A handler that fails for chosen NICs (how many times, with what) and records the rest."""

    def __init__(self) -> None:
        self.done: dict[str, float] = {}  # nic -> when handled
        self.tries: dict[str, int] = {}
        self.failing: dict[str, tuple[int, Callable[[], Exception]]] = {}

    async def __call__(self, conn: asyncpg.Connection, envelope: Envelope, data: AccountUpserted) -> None:
        self.tries[data.nic] = self.tries.get(data.nic, 0) + 1
        times, error = self.failing.get(data.nic, (0, RuntimeError))
        if self.tries[data.nic] <= times:
            raise error()
        self.done[data.nic] = time.monotonic()


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("retries", []) as pool:
        yield pool


@pytest.fixture
async def handled() -> Handled:
    return Handled()


@pytest.fixture
async def bus(pool: asyncpg.Pool, handled: Handled) -> AsyncIterator[ServiceBus]:
    """A consuming service whose retries wait 1 s each (shortened, as settings may)."""
    async with consuming_bus(pool, "retries", [on(AccountUpserted, handled)], retry_seconds=1) as bus:
        yield bus


async def publish(bus: ServiceBus, *messages: AccountUpserted, headers: dict[str, Any] | None = None) -> None:
    if headers is None:
        for message in messages:
            assert await publish_envelope(bus.broker, bus.exchange, envelope_for(message))
        return
    for message in messages:  # as another system would, with headers of its choosing
        envelope = envelope_for(message)
        await bus.broker.publish(
            envelope.model_dump_json().encode(), exchange=bus.exchange, routing_key=KEY, headers=headers,
            message_id=str(envelope.message_id), persist=True,
        )


async def dead_letters(bus: ServiceBus) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(TEST_AMQP_URL)
    async with connection:
        queue = await (await connection.channel()).declare_queue(bus.dead_letters.name, passive=True)
        found = []
        while message := await queue.get(no_ack=True, fail=False):
            found.append(message)
        return found


async def test_a_failing_message_waits_outside_the_consumer_while_the_others_flow(bus: ServiceBus, handled: Handled) -> None:
    handled.failing["zz00000-ovh"] = (3, lambda: RuntimeError("a bug, for a while"))
    started = time.monotonic()
    await publish(bus, account("zz00000-ovh"), *(account(f"aa{i:05d}-ovh") for i in range(50)))

    await until(lambda: len(handled.done) == 51, timeout=30, what="every message handled")

    assert handled.tries["zz00000-ovh"] == 4
    assert handled.done["zz00000-ovh"] - started >= 3  # three waits of 1 s in the retry queue
    others = [at for nic, at in handled.done.items() if nic != "zz00000-ovh"]
    assert max(others) < handled.done["zz00000-ovh"] - 2, "the others waited for the failing one"
    assert await dead_letters(bus) == []


async def test_a_message_failing_every_time_is_dead_lettered_after_the_attempts(bus: ServiceBus, handled: Handled) -> None:
    handled.failing["zz00000-ovh"] = (1000, lambda: RuntimeError("always"))
    await publish(bus, account("zz00000-ovh"))

    (dead,) = await eventually(lambda: dead_letters(bus), timeout=30, what="the dead letter")

    assert handled.tries["zz00000-ovh"] == MAX_ATTEMPTS
    assert dead.headers["x-reason"] == f"failed {MAX_ATTEMPTS} times, last: RuntimeError: always"
    assert dead.headers["x-routing-key"] == KEY


async def test_a_database_outage_is_waited_out_not_counted(bus: ServiceBus, handled: Handled) -> None:
    # More "database unreachable" answers than MAX_ATTEMPTS: never a dead letter, never a retry.
    handled.failing["zz00000-ovh"] = (MAX_ATTEMPTS + 4, lambda: asyncpg.CannotConnectNowError("the database system is starting up"))
    await publish(bus, account("zz00000-ovh"))

    await until(lambda: "zz00000-ovh" in handled.done, timeout=60, what="the message handled once the database answers")

    assert await dead_letters(bus) == []
    assert bus.database.reachable


async def test_a_publisher_cannot_forge_the_retry_headers(bus: ServiceBus, handled: Handled) -> None:
    handled.failing["zz00000-ovh"] = (1, lambda: RuntimeError("once"))
    # A last attempt, and another routing key: both ignored on a message from the exchange.
    await publish(bus, account("zz00000-ovh"), headers={ATTEMPT_HEADER: MAX_ATTEMPTS - 1, ROUTING_KEY_HEADER: "contact_change.vetted"})

    await until(lambda: "zz00000-ovh" in handled.done, timeout=30, what="the message retried and handled")

    assert handled.tries["zz00000-ovh"] == 2
    assert await dead_letters(bus) == []

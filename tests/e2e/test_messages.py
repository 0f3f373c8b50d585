"""Spec section 5: duplicates change nothing; what cannot be understood goes to the service's
dead-letter queue with the reason, and the consumer goes on."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import pika
import pytest
from contacts_shared.bus import exchange_for, new_broker
from contacts_shared.contracts import (
    AccountUpserted,
    ContactChangeStateChanged,
    ContactType,
    Party,
    RequestState,
    Zone,
    envelope_for,
)
from contacts_shared.outbox import publish_envelope
from seed import HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of
from support import System, dead_letters, eventually, queue_depth

pytestmark = pytest.mark.e2e


async def _raw_publish(system: System, routing_key: str, body: bytes, message_id: str | None = None) -> None:
    connection = await aio_pika.connect(system.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{system.namespace}contacts")
        await exchange.publish(
            aio_pika.Message(body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=routing_key,
        )


def _publish_without_message_id(system: System, routing_key: str, body: bytes, **properties: Any) -> None:
    """As a client that cannot set the AMQP `message_id` property does (amqp-tools). pika, since
    aio-pika's aiormq makes one up for every message that has none; blocking, run it in a thread."""
    connection = pika.BlockingConnection(pika.URLParameters(system.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            f"{system.namespace}contacts", routing_key, body, pika.BasicProperties(delivery_mode=2, **properties)
        )
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("routing_key", "body", "reason"),
    [
        ("account.upserted", b"{not json", "invalid envelope"),
        ("account.upserted", json.dumps({"type": "account.upserted", "version": 1, "data": {}}).encode(), "invalid envelope"),
        ("account.upserted", b"", "invalid envelope"),
    ],
)
async def test_malformed_message_is_dead_lettered_with_reason_and_consuming_goes_on(
    world: System, routing_key: str, body: bytes, reason: str
) -> None:
    await _raw_publish(world, routing_key, body)
    letters = await eventually(lambda: dead_letters(world, "requests"), what="a dead letter")
    assert reason in letters[0].headers["x-reason"]
    assert letters[0].body == body
    # The queue is not blocked: the next message is handled.
    await world.publish(AccountUpserted(nic="hh88888-ovh", email="h@example.test", zone=Zone.EU))
    await eventually(
        lambda: world.sql("requests", "SELECT 1 FROM accounts WHERE nic = 'hh88888-ovh'"), what="the next message"
    )


async def test_wrong_payload_names_the_field(world: System) -> None:
    envelope = envelope_for(AccountUpserted(nic="hh88888-ovh", email="h@example.test", zone=Zone.EU))
    body = envelope.model_dump(mode="json")
    body["data"]["zone"] = "MARS"
    await _raw_publish(world, "account.upserted", json.dumps(body).encode())
    letters = await eventually(lambda: dead_letters(world, "requests"), what="a dead letter")
    assert "zone" in letters[0].headers["x-reason"]


async def test_without_the_amqp_message_id_the_envelope_names_the_message_everywhere(world: System) -> None:
    """A client that cannot set the AMQP `message_id` property (amqp-tools): logs and dead letters
    carry the envelope's id, and a dead letter keeps the publisher's own headers and properties."""
    good = envelope_for(AccountUpserted(nic="hh88888-ovh", email="h@example.test", zone=Zone.EU))
    await asyncio.to_thread(_publish_without_message_id, world, "account.upserted", good.model_dump_json().encode())
    bad = envelope_for(AccountUpserted(nic="hh88889-ovh", email="h@example.test", zone=Zone.EU)).model_dump(mode="json")
    bad["data"]["zone"] = "MARS"
    headers = {"x-tenant": "acme", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    await asyncio.to_thread(
        _publish_without_message_id,
        world,
        "account.upserted",
        json.dumps(bad).encode(),
        headers=headers,
        content_type="application/json",
        correlation_id="billing-batch-7",
        app_id="billing-system",
    )
    (letter,) = await eventually(lambda: dead_letters(world, "requests"), what="a dead letter")
    assert letter.message_id == bad["message_id"]
    assert letter.headers["x-original-message-id"] == bad["message_id"]
    assert "zone" in letter.headers["x-reason"] and letter.headers["x-routing-key"] == "account.upserted"
    assert {k: letter.headers[k] for k in headers} == headers
    assert (letter.content_type, letter.correlation_id) == ("application/json", "billing-batch-7")
    await eventually(lambda: world.sql("requests", "SELECT 1 FROM accounts WHERE nic = 'hh88888-ovh'"), what="the good one")
    logs = world.logs()
    assert f"amqp_message_id={good.message_id}" in logs or f'"amqp_message_id": "{good.message_id}"' in logs


async def test_same_message_twice_has_one_effect(world: System) -> None:
    """A redelivered `account.upserted` that arrives after a newer one must not undo it."""
    old = envelope_for(AccountUpserted(nic=OWNER, email="old@example.test", zone=Zone.EU))
    await _raw_publish(world, "account.upserted", old.model_dump_json().encode(), str(old.message_id))
    await world.publish(AccountUpserted(nic=OWNER, email=email_of(OWNER), zone=Zone.EU))
    await _raw_publish(world, "account.upserted", old.model_dump_json().encode(), str(old.message_id))
    marker = AccountUpserted(nic="hh88888-ovh", email="h@example.test", zone=Zone.EU)
    await world.publish(marker)
    await eventually(lambda: world.sql("requests", "SELECT 1 FROM accounts WHERE nic = 'hh88888-ovh'"), what="marker")
    rows = await world.sql("requests", "SELECT email FROM accounts WHERE nic = $1", OWNER)
    assert rows[0]["email"] == email_of(OWNER)
    inbox = await world.sql("requests", "SELECT count(*) AS n FROM inbox WHERE message_id = $1", old.message_id)
    assert inbox[0]["n"] == 1
    assert await world.contacts_of(OWNER, HOSTING)


async def test_routing_key_the_service_does_not_consume_is_dead_lettered(world: System) -> None:
    # Bind the notifier's queue to an extra key, as a misconfigured binding would.
    connection = await aio_pika.connect(world.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{world.namespace}notifier", passive=True)
        await queue.bind(f"{world.namespace}contacts", "account.upserted")
    await world.publish(AccountUpserted(nic="hh88888-ovh", email="h@example.test", zone=Zone.EU))
    letters = await eventually(lambda: dead_letters(world, "notifier"), what="a dead letter")
    assert "does not consume" in letters[0].headers["x-reason"]
    assert uuid.UUID(json.loads(letters[0].body)["message_id"])


async def test_the_notifier_hears_only_of_states_that_mail_and_one_that_mails_nobody_leaves_no_trace(world: System) -> None:
    """Published as the requests service publishes (routed by state too), `validating` mails
    nobody (the notifier's queue is not bound to it: shared/tests/test_routing_by_state.py); a
    bound state that mails nobody all the same (a `rejected` without its requester among the
    parties) is acked without a transaction (no inbox row); the done one mails its three."""

    def state_changed(state: RequestState, *roles: str) -> ContactChangeStateChanged:
        parties = {"requester": OWNER, "from": OLD_TECH, "to": WEBMASTER}
        return ContactChangeStateChanged(
            request_id=request_id,
            service=HOSTING,
            type=ContactType.tech,
            from_=OLD_TECH,
            to=WEBMASTER,
            state=state,
            parties=[Party(nic=parties[role], email=email_of(parties[role]), role=role) for role in roles],
        )

    request_id = uuid.uuid4()
    broker = new_broker(world.amqp_url)
    await broker.connect()
    try:
        exchange = exchange_for(world.namespace)
        quiet, nobody, done = (
            envelope_for(state_changed(RequestState.validating, "requester", "from", "to")),
            envelope_for(state_changed(RequestState.rejected, "from", "to")),
            envelope_for(state_changed(RequestState.done, "requester", "from", "to")),
        )
        for envelope in (quiet, nobody, done):
            assert await publish_envelope(broker, exchange, envelope)
    finally:
        await broker.stop()

    def mails_of_the_request() -> list:
        return [m for m in world.mails() if str(request_id) in m.body]  # outcome emails link to it

    async def done_mailed() -> bool:
        return len(mails_of_the_request()) >= 3

    await eventually(done_mailed, what="the done emails")
    ids = [quiet.message_id, nobody.message_id, done.message_id]
    inbox = await world.sql("notifier", "SELECT message_id FROM inbox WHERE message_id = ANY($1::uuid[])", ids)
    assert [r["message_id"] for r in inbox] == [done.message_id]
    assert len(mails_of_the_request()) == 3  # the done emails only
    assert await queue_depth(world.amqp_url, f"{world.namespace}notifier") == 0
    assert await dead_letters(world, "notifier") == []

"""Messages that must not be acted on, from a system allowed on the bus: a version this service
does not know, and an email field holding more than one address (an email header that names
several recipients would send a confirmer's code to someone else too). Each is dead-lettered with
the reason, and changes nothing."""

from __future__ import annotations

import json

import aio_pika
import pytest
from contacts_shared.contracts import AccountUpserted, Zone, envelope_for
from security.table import tried
from seed import WEBMASTER
from support import System, dead_letters, eventually

NIC = "hh88888-ovh"


async def publish_raw(world: System, routing_key: str, body: dict[str, object]) -> None:
    connection = await aio_pika.connect(world.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{world.namespace}contacts")
        await exchange.publish(aio_pika.Message(json.dumps(body).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=routing_key)


async def dead_letter_reasons(world: System, service: str) -> list[str]:
    return [str(m.headers.get("x-reason", "")) for m in await dead_letters(world, service)]


def account(email: str, nic: str = NIC, **envelope: object) -> dict[str, object]:
    body = envelope_for(AccountUpserted(nic=nic, email="placeholder@example.test", zone=Zone.EU)).model_dump(mode="json")
    body["data"]["email"] = email  # type: ignore[index]
    return {**body, **envelope}


HOSTILE = {
    "account.upserted of version 2": (account("h@example.test", version=2), "version 2 of account.upserted is not one this service knows"),
    "email field with two addresses (comma)": (account("h@example.test, thief@evil.example"), "email: Value error, must be one email address"),
    "email field with a display name and brackets": (account("Thief <thief@evil.example>"), "email: Value error, must be one email address"),
    "email field that a mail header reads as two recipients": (account("a,thief@evil.example"), "email: Value error, must be one email address"),
    "webmaster's email replaced by two addresses": (account("bb@example.test,thief@evil.example", nic=WEBMASTER), "email: Value error, must be one email address"),
}


@pytest.mark.parametrize("hostile", list(HOSTILE))
async def test_hostile_messages_are_dead_lettered_with_the_reason(world: System, hostile: str) -> None:
    body, reason = HOSTILE[hostile]
    nic = body["data"]["nic"]  # type: ignore[index]
    before = await world.sql("requests", "SELECT email FROM accounts WHERE nic = $1", nic)
    already = len(await dead_letter_reasons(world, "requests"))
    await publish_raw(world, "account.upserted", body)

    async def new_reasons() -> list[str] | None:
        reasons = await dead_letter_reasons(world, "requests")
        return reasons[already:] if len(reasons) > already else None

    (found,) = await eventually(new_reasons, what="the message in the dead-letter queue")
    assert reason in found, found
    assert "thief" not in found, "the reason echoes the input"
    # The next message is handled, and the hostile one changed nothing.
    await world.publish(AccountUpserted(nic="hh88889-ovh", email="next@example.test", zone=Zone.EU))
    await eventually(lambda: world.sql("requests", "SELECT 1 FROM accounts WHERE nic = 'hh88889-ovh'"), what="the next message")
    assert await world.sql("requests", "SELECT email FROM accounts WHERE nic = $1", nic) == before
    tried(f"bus message: {hostile}", "dead-lettered with the reason, nothing changed")

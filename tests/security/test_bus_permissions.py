"""A trust boundary on the bus, enforced by RabbitMQ: the services run as their own users (made
by `contacts bus-users`), and the other systems' user may publish only what other systems own.
A forged `contact_change.vetted`, `token_issued` or `validation_requested` published with it is
refused by the broker and changes nothing; its `account.upserted` still works, and a whole
change completes with every service on its least-privileged user."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiormq
import pytest
from contacts_shared.contracts import (
    MESSAGE_TYPES,
    STATE_CHANGED,
    AccountUpserted,
    Contract,
    Zone,
    envelope_for,
    state_key,
)
from contacts_tools import bus_access
from security.table import tried
from seed import HOSTING, OWNER, WEBMASTER, email_of, feed_world
from support import System, eventually, new_namespace, running_system

MANAGEMENT_URL = os.environ.get("CONTACTS_TEST_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
BIN = Path(sys.executable).parent


def url_as(amqp_url: str, user: str, password: str) -> str:
    """`amqp_url` with another user's credentials."""
    scheme, rest = amqp_url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest.rsplit('@', 1)[-1]}"


@pytest.fixture(scope="module")
async def bus_world(infrastructure: tuple[str, str]) -> AsyncIterator[tuple[System, str]]:
    """The system with each service on its own user; and the other systems' AMQP URL."""
    database_url, amqp_url = infrastructure
    namespace = new_namespace()
    passwords = {user: secrets.token_urlsafe(24) for user in bus_access.USERS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")} | {"CONTACTS_NAMESPACE": namespace}
    env |= {bus_access.password_variable(u): p for u, p in passwords.items()}
    made = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "contacts"), "bus-users", "--management-url", MANAGEMENT_URL],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.count("permissions and topic permissions set") == len(bus_access.USERS), made.stdout
    as_user = {u: url_as(amqp_url, bus_access.user_name(namespace, u), p) for u, p in passwords.items()}
    per_service = {f"contacts-{s}": {"CONTACTS_AMQP_URL": as_user[s]} for s in bus_access.SERVICES}
    try:
        async with running_system(database_url, amqp_url, "security-bus", namespace=namespace, per_service=per_service) as system:
            yield await feed_world(system), as_user["other-systems"]
    finally:
        await bus_access.remove(MANAGEMENT_URL, ("guest", "guest"), namespace)


async def publish_as(amqp_url: str, exchange: str, message: Contract, routing_key: str | None = None) -> None:
    """Publish as an integrating system would: on the existing exchange, confirmed, by its
    type's routing key unless given another."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        target = await channel.get_exchange(exchange, ensure=False)
        envelope = envelope_for(message)
        await target.publish(aio_pika.Message(envelope.model_dump_json(by_alias=True).encode(), message_id=str(envelope.message_id)), routing_key=routing_key or envelope.type)
    finally:
        await connection.close()


# Every routing key a service owns, each forged as harmfully as it gets.
# A state key stands for its type (`contact_change.state_changed.<state>`: the notifier binds those).
SERVICE_KEYS = [key.replace("*", "done") for service in bus_access.SERVICES for key in bus_access.WRITES[service]]
TYPE_OF = {state_key("done"): STATE_CHANGED}
HARMFUL = {
    state_key("done"): {"state": "done"},  # the done emails, for a change never made
    "contact_change.vetted": {"approved": True, "reasons": []},  # skip the billing check
    "contact_change.token_issued": {"nic": WEBMASTER},  # a code of the forger's choosing
}


def forged(routing_key: str, request_id: str) -> Contract:
    model = MESSAGE_TYPES[TYPE_OF.get(routing_key, routing_key)]
    example = model.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    return model.model_validate({**example, "request_id": request_id, **HARMFUL.get(routing_key, {})})


@pytest.mark.parametrize("forgery", SERVICE_KEYS)
async def test_the_other_systems_user_cannot_publish_what_the_services_own(bus_world: tuple[System, str], forgery: str) -> None:
    world, other_systems = bus_world
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    await world.token_mail(email_of(WEBMASTER), request_id)
    try:
        before = await world.sql("requests", "SELECT state, updated_at FROM contact_changes WHERE id = $1", request_id)
        mails = len(world.sink.store.messages())
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await publish_as(other_systems, f"{world.namespace}contacts", forged(forgery, request_id), forgery)
        assert await world.sql("requests", "SELECT state, updated_at FROM contact_changes WHERE id = $1", request_id) == before
        assert len(world.sink.store.messages()) == mails
    finally:  # the service and type free for the next forgery
        async with world.api(OWNER) as owner:
            assert (await owner.post(f"/v1/contact-changes/{request_id}/cancel")).status_code == 200
    harm = ", ".join(f"{k}={v}" for k, v in HARMFUL.get(forgery, {}).items())
    tried(f"forged bus message: {forgery}{f' ({harm})' if harm else ''}, as the other systems' user", "ACCESS_REFUSED by RabbitMQ (topic permission)")


async def test_the_other_systems_user_still_publishes_what_other_systems_own(bus_world: tuple[System, str]) -> None:
    world, other_systems = bus_world
    await publish_as(other_systems, f"{world.namespace}contacts", AccountUpserted(nic="zz99999-ovh", email="zz@example.test", zone=Zone.EU))

    async def known() -> bool:
        return bool(await world.sql("requests", "SELECT 1 FROM accounts WHERE nic = 'zz99999-ovh'"))

    await eventually(known, what="the account published by the other systems' user")
    # `contacts publish` (and compose's demo job, `contacts demo`) works with it too.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")}
    env |= {"CONTACTS_AMQP_URL": other_systems, "CONTACTS_NAMESPACE": world.namespace}
    data = '{"nic": "zz99998-ovh", "email": "zz8@example.test", "zone": "EU"}'
    published = await asyncio.to_thread(
        subprocess.run, [str(BIN / "contacts"), "publish", "account.upserted", data], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert published.returncode == 0, published.stderr
    await eventually(lambda: world.sql("requests", "SELECT 1 FROM accounts WHERE nic = 'zz99998-ovh'"), what="the account published with contacts publish")


async def test_a_change_completes_with_every_service_on_its_own_user(bus_world: tuple[System, str]) -> None:
    world, _ = bus_world
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    for nic in (WEBMASTER, OWNER):
        mail = await world.token_mail(email_of(nic), request_id)
        assert (await world.act(nic, request_id, "accept", mail.token)).status_code == 200
    await world.wait_state(OWNER, request_id, "done", timeout=30)

"""The bus's trust boundary as the compose files ship it: a RabbitMQ node of the test's own,
configured with the deployment's deploy/rabbitmq/20-contacts.conf, loads at start the
definitions `contacts bus-definitions` writes, and then enforces them: no guest user, the
administrator signs in, each user publishes only the routing keys it owns."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiormq
import pytest
from contacts_tools import bus_access
from own_nodes import OwnRabbit, chown, own_rabbit
from security.table import tried

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy/rabbitmq/20-contacts.conf"
IN_CONTAINER = "/etc/rabbitmq/definitions.json"
BIN = Path(sys.executable).parent


@dataclass
class Broker:
    node: OwnRabbit
    passwords: dict[str, str]  # bus_access user (and "admin") -> password

    def url(self, user: str) -> str:
        name = "admin" if user == "admin" else bus_access.user_name("", user)
        return f"amqp://{name}:{self.passwords[user]}@127.0.0.1:{self.node.port}/%2f"


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    """A node started with the deployment's RabbitMQ config, pointed at definitions made by the
    command from fresh passwords."""
    if not shutil.which("rabbitmq-server"):
        pytest.fail("this test needs RabbitMQ's server binaries: apt-get install rabbitmq-server")
    root = Path(tempfile.mkdtemp(prefix="contacts-definitions-"))
    os.chmod(root, 0o755)
    passwords = {user: secrets.token_urlsafe(24) for user in (*bus_access.USERS, "admin")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTACTS_", "RABBITMQ_"))}
    env |= {bus_access.password_variable(u): passwords[u] for u in bus_access.USERS}
    env |= {"RABBITMQ_ADMIN_USER": "admin", "RABBITMQ_ADMIN_PASSWORD": passwords["admin"]}
    definitions = root / "definitions.json"
    made = subprocess.run(
        [str(BIN / "contacts"), "bus-definitions", "--out", str(definitions)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert made.returncode == 0, made.stderr
    assert passwords["admin"] not in definitions.read_text()  # hashes only
    chown(root, "rabbitmq")
    # The deployment's own config, with the file where this node finds it (guest is allowed from
    # anywhere, so that its refusal below can only mean it does not exist).
    node = own_rabbit(root / "mq", CONFIG.read_text().replace(IN_CONTAINER, str(definitions)))
    try:
        node.start()
        yield Broker(node, passwords)
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)


async def publish(url: str, routing_key: str) -> None:
    """Publish one message on the namespace's exchange (declared once by requests), confirmed."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange("contacts", ensure=False)
        await exchange.publish(aio_pika.Message(b"{}"), routing_key=routing_key)
    finally:
        await connection.close()


async def test_the_node_makes_no_guest_user_and_the_administrator_signs_in(broker: Broker) -> None:
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{broker.node.port}/%2f")
    connection = await aio_pika.connect(broker.url("admin"))
    await connection.close()
    users = await asyncio.to_thread(broker.node.ctl, "list_users", "-q", "--no-table-headers")
    assert sorted(line.split()[0] for line in users.splitlines() if line.strip()) == sorted(
        ["admin", *(bus_access.user_name("", u) for u in bus_access.USERS)]
    )
    tried("the broker's guest/guest sign-in, on a node loading the deployment's definitions", "ACCESS_REFUSED: no guest user")


async def test_each_user_publishes_exactly_the_routing_keys_it_owns(broker: Broker) -> None:
    # requests declares the exchange, as the service does at start (configure permission).
    connection = await aio_pika.connect(broker.url("requests"))
    channel = await connection.channel()
    await channel.declare_exchange("contacts", aio_pika.ExchangeType.TOPIC, durable=True)
    await connection.close()
    every_key = sorted({k.replace("*", "upserted") for keys in bus_access.WRITES.values() for k in keys})
    for user in bus_access.USERS:
        owned = {k.replace("*", "upserted") for k in bus_access.WRITES[user]}
        for key in every_key:
            if key in owned:
                await publish(broker.url(user), key)
            else:
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                    await publish(broker.url(user), key)
    tried(
        "forged bus messages per routing key, every user, on a node loading the deployment's definitions",
        "ACCESS_REFUSED by RabbitMQ except each user's own keys",
    )

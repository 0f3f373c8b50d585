"""The `contacts` command as a user runs it: a real process, a real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aio_pika
import jwt
import pytest
from contacts_shared.auth import Caller, TokenVerifier
from contacts_shared.contracts import ROUTING_KEYS, AccountUpserted, ServiceUpserted
from contacts_tools import dev_session
from contacts_tools.demo import demo_messages
from support import free_port

CONTACTS = Path(sys.executable).parent / "contacts"
AMQP_URL = os.environ.get("CONTACTS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
SECRET = "a-test-secret-of-at-least-32-bytes!"


@dataclass
class Completed:
    status: int
    stdout: str
    stderr: str


async def run_contacts(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Completed:
    """Run the installed `contacts` script with only the given CONTACTS_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")}
    process = await asyncio.create_subprocess_exec(
        str(CONTACTS),
        *args,
        env={**clean, **(env or {})},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), 60)
    return Completed(process.returncode or 0, out.decode(), err.decode())


@dataclass
class Exchange:
    """The namespace's exchange with a test queue bound to every routing key."""

    env: dict[str, str]
    received: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]

    async def next_message(self, timeout: float = 10.0) -> aio_pika.abc.AbstractIncomingMessage:
        return await asyncio.wait_for(self.received.get(), timeout)


@pytest.fixture
async def exchange() -> AsyncIterator[Exchange]:
    namespace = f"t{uuid.uuid4().hex[:10]}_"
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    # Declared as contacts_shared.bus declares it, so the CLI's declaration matches.
    declared = await channel.declare_exchange(f"{namespace}contacts", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{namespace}cli-test", exclusive=True)
    await queue.bind(declared, routing_key="#")
    received: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    await queue.consume(received.put, no_ack=True)
    try:
        yield Exchange(env={"CONTACTS_AMQP_URL": AMQP_URL, "CONTACTS_NAMESPACE": namespace}, received=received)
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await channel.exchange_delete(f"{namespace}contacts")
        await connection.close()


# --- publish --------------------------------------------------------------------------------------


async def test_publish_sends_the_validated_data_in_an_envelope(exchange: Exchange) -> None:
    data = {"nic": " AA11111-OVH ", "email": "owner@shop-example.test", "zone": "EU"}

    result = await run_contacts("publish", "account.upserted", json.dumps(data), env=exchange.env)

    assert result.status == 0, result.stderr
    message_id = result.stdout.strip()
    message = await exchange.next_message()
    envelope = json.loads(message.body)
    assert envelope["message_id"] == message_id == message.message_id
    assert envelope["type"] == message.routing_key == "account.upserted"
    assert envelope["version"] == 1
    assert datetime.fromisoformat(envelope["occurred_at"]).utcoffset().total_seconds() == 0
    # The data went through the contract: the NIC handle is normalised, the language a default.
    assert envelope["data"] == {"nic": "aa11111-ovh", "email": "owner@shop-example.test", "zone": "EU", "language": "en"}
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"


async def test_publish_reads_stdin_and_keeps_a_given_message_id(exchange: Exchange) -> None:
    message_id = str(uuid.uuid4())
    request_id = str(uuid.uuid4())
    data = {"request_id": request_id, "phase": "submit", "service": "shop-example.com", "type": "tech",
            "from": "cc33333-ovh", "to": "bb22222-ovh"}  # fmt: skip

    result = await run_contacts(
        "publish", "contact_change.requested", "-", "--message-id", message_id, env=exchange.env, stdin=json.dumps(data)
    )

    assert result.status == 0, result.stderr
    assert result.stdout.strip() == message_id
    envelope = json.loads((await exchange.next_message()).body)
    assert envelope["message_id"] == message_id
    assert envelope["data"] == data  # `from` keeps its wire name


@pytest.mark.parametrize(
    ("routing_key", "data", "named"),
    [
        ("account.upserted", '{"nic": "aa11111-ovh", "email": "a@b.test", "zone": "XX"}', "'zone'"),
        ("account.upserted", '{"nic": "not a nic", "email": "a@b.test", "zone": "EU"}', "'nic'"),
        ("service.upserted", '{"service": "x", "type": "domain", "tech": "aa1-ovh", "billing": "aa1-ovh"}', "'admin'"),
        ("contact_change.submit", '{"requester": "aa1-ovh", "service": "x", "changes": {"tech": "?"}}', "'changes.tech'"),
        ("account.upserted", '{"nic": ', "invalid JSON"),
        ("account.upserted", '["aa11111-ovh"]', "JSON object"),
        ("account.created", "{}", "unknown routing key 'account.created'"),
    ],
)
async def test_publish_refuses_bad_input_with_one_line(routing_key: str, data: str, named: str) -> None:
    # An unreachable broker: had the CLI tried to publish, the status would be 1, not 2.
    env = {"CONTACTS_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}

    result = await run_contacts("publish", routing_key, data, env=env)

    assert result.status == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("contacts publish: ") and named in line


async def test_an_unreachable_broker_is_one_line_without_the_password() -> None:
    url = f"amqp://guest:s3cret-pw@127.0.0.1:{free_port()}/"
    data = json.dumps({"nic": "aa11111-ovh"})

    result = await run_contacts("publish", "account.deleted", data, env={"CONTACTS_AMQP_URL": url})

    assert result.status == 1
    (line,) = result.stderr.strip().splitlines()
    assert "cannot publish to RabbitMQ" in line and "s3cret-pw" not in line


async def test_a_bad_setting_is_one_line() -> None:
    result = await run_contacts("publish", "account.deleted", '{"nic": "aa1-ovh"}', env={"CONTACTS_NAMESPACE": "No!"})

    assert result.status == 2
    (line,) = result.stderr.strip().splitlines()
    assert "CONTACTS_NAMESPACE" in line


# --- demo -----------------------------------------------------------------------------------------


async def test_demo_publishes_its_world_in_order(exchange: Exchange) -> None:
    expected = [ROUTING_KEYS[type(m)] for m in demo_messages()]

    result = await run_contacts("demo", env=exchange.env)

    assert result.status == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == expected
    received = [(await exchange.next_message()).routing_key for _ in expected]
    assert received == expected


def test_demo_tells_the_webmaster_story() -> None:
    messages = demo_messages()
    accounts = {m.nic: m for m in messages if isinstance(m, AccountUpserted)}
    services = {m.service: m for m in messages if isinstance(m, ServiceUpserted)}
    assert {nic: a.zone.value for nic, a in accounts.items()} == {
        "aa11111-ovh": "EU", "bb22222-ovh": "EU", "cc33333-ovh": "EU", "dd44444-ovh": "EU", "ee55555-ovh": "CA",
    }  # fmt: skip
    for service in ("shop-example.web-hosting", "shop-example.com"):
        assert (services[service].admin, services[service].billing) == ("aa11111-ovh", "aa11111-ovh")
    # Every contact is an account published before the service that names it.
    order = [getattr(m, "nic", None) or getattr(m, "service", None) for m in messages]
    for name, service in services.items():
        for nic in (service.admin, service.tech, service.billing):
            assert order.index(nic) < order.index(name)


# --- token ----------------------------------------------------------------------------------------


async def test_token_is_a_jwt_for_the_nic() -> None:
    result = await run_contacts("token", "AA11111-OVH", "--ttl", "120", env={"CONTACTS_JWT_SECRET": SECRET})

    assert result.status == 0, result.stderr
    token = result.stdout.strip()
    assert await TokenVerifier(SECRET).verify(token) == Caller("aa11111-ovh")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 120


async def test_token_for_a_support_agent_holds_the_role_where_the_roles_claim_says() -> None:
    env = {"CONTACTS_JWT_SECRET": SECRET, "CONTACTS_JWT_ROLES_CLAIM": "realm_access.roles"}
    result = await run_contacts("token", "zz99999-ovh", "--role", "support", env=env)

    assert result.status == 0, result.stderr
    token = result.stdout.strip()
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["realm_access"] == {"roles": ["support"]}
    caller = await TokenVerifier(SECRET, roles_claim="realm_access.roles").verify(token)
    assert caller.is_agent
    assert not (await TokenVerifier(SECRET).verify(token)).is_agent, "read from another claim"


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["aa11111-ovh"], {}, "CONTACTS_JWT_SECRET"),
        (["not-a-nic"], {"CONTACTS_JWT_SECRET": SECRET}, "not a NIC handle"),
    ],
)
async def test_token_refuses_with_one_line(args: list[str], env: dict[str, str], named: str) -> None:
    result = await run_contacts("token", *args, env=env)

    assert result.status == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert named in line


# --- help -----------------------------------------------------------------------------------------


async def test_help_lists_the_commands() -> None:
    result = await run_contacts("--help")

    assert result.status == 0
    for command in ("publish", "token", "demo", "dev", "mailsink"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["publish", "token", "demo", "dev", "mailsink"])
async def test_each_command_has_help_with_examples(command: str) -> None:
    result = await run_contacts(command, "--help")

    assert result.status == 0
    assert "examples:" in result.stdout and f"contacts {command}" in result.stdout


# --- dev: supervising the services ----------------------------------------------------------------


class Recorder:
    """Collects `(source, line)` output and lets a test wait for a condition on it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, source: str, line: str) -> None:
        self.lines.append((source, line))
        self._changed.set()

    async def wait_for(self, condition: Callable[[list[tuple[str, str]]], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.lines):
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), max(deadline - time.monotonic(), 0.001))


def python_child(name: str, code: str) -> dev_session.ChildProgram:
    return dev_session.ChildProgram(name, (sys.executable, "-c", code))


SERVES = "import time; print('ready', flush=True); time.sleep(120)"
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
)


def both_ready(lines: list[tuple[str, str]]) -> bool:
    return {source for source, line in lines if line == "ready"} == {"one", "two"}


async def test_supervise_stops_everything_when_a_child_dies() -> None:
    out = Recorder()
    programs = [python_child("steady", SERVES), python_child("crashing", "print('boom'); raise SystemExit(3)")]

    exited = await asyncio.wait_for(dev_session.supervise(programs, dict(os.environ), asyncio.Event(), out), 30)

    assert exited == dev_session.UnexpectedExit("crashing", 3)
    assert ("crashing", "boom") in out.lines


async def test_supervise_stops_the_children_on_request() -> None:
    out = Recorder()
    stop = asyncio.Event()
    programs = [python_child("one", SERVES), python_child("two", SERVES)]
    supervising = asyncio.create_task(dev_session.supervise(programs, dict(os.environ), stop, out))

    await out.wait_for(both_ready)
    stop.set()

    assert await asyncio.wait_for(supervising, 30) is None


async def test_supervise_kills_a_child_that_ignores_sigterm() -> None:
    out = Recorder()
    stop = asyncio.Event()
    programs = [python_child("one", IGNORES_SIGTERM), python_child("two", SERVES)]
    supervising = asyncio.create_task(dev_session.supervise(programs, dict(os.environ), stop, out, grace=0.3))

    await out.wait_for(both_ready)
    stop.set()

    assert await asyncio.wait_for(supervising, 30) is None
    assert any(source == "one" and "killing it" in line for source, line in out.lines)

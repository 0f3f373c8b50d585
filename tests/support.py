"""Helpers for cross-service tests: the three services as real processes, started through
their console scripts against the local PostgreSQL and RabbitMQ (or testcontainers where a
Docker engine answers), and a real SMTP sink.

`System` is the system under test as users and other systems see it: an HTTP API, an
exchange to publish on, and a mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import email.parser
import os
import random
import re
import shutil
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import aio_pika
import asyncpg
import httpx
from contacts_shared.auth import SUPPORT_ROLE, mint_token
from contacts_shared.bus import exchange_for, new_broker
from contacts_shared.contracts import Contract, Envelope, envelope_for
from contacts_shared.outbox import publish_envelope
from contacts_tools.commands import SERVICE_QUEUES
from contacts_tools.mailsink import MailSink
from launch import PROGRAMS, Process, launch

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SERVICES = PROGRAMS
SCHEMAS = SERVICE_QUEUES  # each service's queue and schema have the same name
SCHEMA_OF = dict(zip(SERVICES, SCHEMAS, strict=True))  # program -> the schema it owns


def service_databases() -> dict[str, str]:
    """Where each service's schema lives when a run is told to keep them on servers of their own
    (CONTACTS_TEST_SERVICE_DATABASES="billing_check=URL,notifier=URL"): schema -> database URL.
    A schema not named stays on the main test database."""
    value = os.environ.get("CONTACTS_TEST_SERVICE_DATABASES", "")
    return dict(item.split("=", 1) for item in value.split(",") if item)
T = TypeVar("T")

if TYPE_CHECKING:
    from capture import MessageCapture


# Ports for the servers a test starts are drawn below the kernel's ephemeral range (32768 and
# up), which every outgoing connection takes its local port from: a port found free there can
# be taken by a client socket before the server binds it ("address already in use").
_PORTS = range(20000, 32768)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, outside the ephemeral range, never handed out twice by this
    process (a random start keeps two test processes on one machine apart)."""
    for _ in range(1000):
        port = random.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found between 20000 and 32767")


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, what: str = "condition", interval: float = 0.02
) -> T:
    """Poll `check` every `interval` seconds until it returns something truthy, or fail after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def take_messages(queue: aio_pika.abc.AbstractQueue, count: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """The next `count` messages of `queue`, acked, in the order it has them; fails if they do not
    all come within `eventually`'s timeout, or if one more is there after them."""
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def got_all() -> bool:
        while len(taken) < count and (message := await queue.get(no_ack=True, fail=False)):
            taken.append(message)
        return len(taken) >= count

    await eventually(got_all, what=f"{count} messages on {queue.name}")
    assert await queue.get(no_ack=True, fail=False) is None, "more messages than expected"
    return taken


# --- the system under test ------------------------------------------------------------------------


TOKEN_LINK = re.compile(r"/requests/([0-9a-f-]{36})\?token=([A-Za-z0-9_\-%]+)")


@dataclass
class Mail:
    to: list[str]
    subject: str
    body: str
    raw: bytes = b""  # the message as the sink received it

    @property
    def headers(self) -> email.message.Message:
        """Its header fields (Content-Language, Message-ID...), read from the raw message."""
        return email.parser.BytesHeaderParser().parsebytes(self.raw)

    @property
    def token(self) -> str:
        match = TOKEN_LINK.search(self.body)
        assert match, f"no confirm link in: {self.body}"
        return match.group(2)

    @property
    def request_id(self) -> str:
        match = TOKEN_LINK.search(self.body)
        assert match
        return match.group(1)


@dataclass
class System:
    namespace: str
    database_url: str
    amqp_url: str
    api_url: str
    jwt_secret: str
    sink: MailSink
    log_dir: Path
    processes: dict[str, Process] = field(default_factory=dict)
    capture: MessageCapture | None = None  # every message on the exchange (see tests/capture.py)
    env: dict[str, str] = field(default_factory=dict)  # the services' environment, for restarts
    replica_api_urls: list[str] = field(default_factory=list)  # the HTTP APIs of extra replicas
    token_secret: str = field(default_factory=lambda: uuid.uuid4().hex * 2)  # the notifier's key
    # More environment for one service's processes started from now on ({program: {name: value}}).
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)

    # --- talking to it like users and other systems do ---

    def jwt(self, nic: str, *, agent: bool = False) -> str:
        """The identity provider's token for `nic` (`agent`: with the role of support agents)."""
        return mint_token(self.jwt_secret, nic, roles=[SUPPORT_ROLE] if agent else [])

    def api(self, nic: str | None = None, *, agent: bool = False) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.jwt(nic, agent=agent)}"} if nic else {}
        return httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=15)

    async def publish(self, *messages: Contract | Envelope) -> None:
        """Publish each message (in an envelope of its own, unless given one) in this order."""
        broker = new_broker(self.amqp_url)
        await broker.connect()
        try:
            exchange = exchange_for(self.namespace)
            await broker.declare_exchange(exchange)
            for message in messages:
                await publish_envelope(broker, exchange, message if isinstance(message, Envelope) else envelope_for(message))
        finally:
            await broker.stop()

    async def submit(self, nic: str, service: str, changes: dict[str, str], **headers: str) -> httpx.Response:
        async with self.api(nic) as client:
            return await client.post(f"/v1/services/{quote(service, safe='')}/contact-changes", json=changes, headers=headers)

    async def act(self, nic: str, request_id: str, action: str, token: str | None = None) -> httpx.Response:
        """accept / decline (with a token), resend, cancel."""
        async with self.api(nic) as client:
            body = {"token": token} if token is not None else None
            return await client.post(f"/v1/contact-changes/{request_id}/{action}", json=body)

    async def submit_one(self, nic: str, service: str, changes: dict[str, str]) -> str:
        response = await self.submit(nic, service, changes)
        assert response.status_code == 202, response.text
        (item,) = response.json()["items"]
        return item["id"]

    # --- reading the mailbox ---

    async def token_mail(self, to: str, request_id: str, count: int = 1) -> Mail:
        """The newest token email to `to` for the request (waits for the `count`-th)."""

        async def arrived() -> list[Mail] | None:
            found = [m for m in self.mails(to, "please confirm") if m.request_id == request_id]
            return found if len(found) >= count else None

        return (await eventually(arrived, what=f"token email {count} to {to}"))[-1]

    def mails(self, to: str | None = None, subject: str | None = None) -> list[Mail]:
        found = []
        for m in self.sink.store.messages():
            mail = Mail(to=list(m.rcpt_tos), subject=m.subject, body=m.text, raw=m.raw)
            if to and to not in mail.to:
                continue
            if subject and subject.lower() not in mail.subject.lower():
                continue
            found.append(mail)
        return found

    async def wait_mails(self, to: str, subject: str, count: int = 1, timeout: float = 10.0) -> list[Mail]:
        async def enough() -> list[Mail] | None:
            found = self.mails(to, subject)
            return found if len(found) >= count else None

        return await eventually(enough, timeout=timeout, what=f"{count} mail(s) '{subject}' to {to}")

    # --- reading state ---

    async def request(self, nic: str, request_id: str) -> dict[str, Any]:
        async with self.api(nic) as client:
            response = await client.get(f"/v1/contact-changes/{request_id}")
            assert response.status_code == 200, response.text
            return response.json()

    async def wait_state(self, nic: str, request_id: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            view = await self.request(nic, request_id)
            return view if view["state"] == state else None

        return await eventually(reached, timeout=timeout, what=f"request {request_id} to be {state}")

    async def contacts_of(self, nic: str, service: str) -> dict[str, str] | None:
        async with self.api(nic) as client:
            # My contacts come by pages: those whose id holds the service's, however many `nic` has.
            response = await client.get("/v1/me/contacts", params={"q": service, "limit": 200})
            assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            if item["service"] == service:
                return item["contacts"]
        return None

    def database_url_of(self, schema: str) -> str:
        return service_databases().get(schema, self.database_url)

    async def sql(self, schema: str, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url_of(schema), server_settings={"search_path": f"{self.namespace}{schema}"})
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


def service_env(system: System, http_port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the three services run with: this process's, minus any CONTACTS_*,
    plus the settings of `system` (its namespace, infrastructure, sink and HTTP port). They run in
    development mode, which allows the fault tests' crash points; the production checks have their
    own tests (tests/test_settings.py, tests/security)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")},
        "CONTACTS_ENV": "development",
        "CONTACTS_DATABASE_URL": system.database_url,
        "CONTACTS_AMQP_URL": system.amqp_url,
        "CONTACTS_NAMESPACE": system.namespace,
        "CONTACTS_JWT_SECRET": system.jwt_secret,
        "CONTACTS_HTTP_PORT": str(http_port),
        "CONTACTS_PUBLIC_URL": system.api_url,
        "CONTACTS_SMTP_HOST": system.sink.smtp_host,
        "CONTACTS_SMTP_PORT": str(system.sink.smtp_port),
        "CONTACTS_MAIL_FROM": "contacts@example.test",
        "CONTACTS_TOKEN_SECRET": system.token_secret,
        **(extra or {}),
    }


async def dead_letters(system: System, service: str, *, take: bool = False) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """The messages in the service's dead-letter queue: looked at and put back, or, with
    `take`, removed."""
    connection = await aio_pika.connect(system.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{system.namespace}{service}.dlq", passive=True)
        found = []
        while (message := await queue.get(no_ack=take, fail=False)) is not None:
            found.append(message)
        if not take:
            for message in found:
                await message.nack(requeue=True)
        return found


async def queue_state(amqp_url: str, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of `queue`; (0, 0) when it does not exist (yet)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count, declared.declaration_result.consumer_count
    except aio_pika.exceptions.ChannelClosed:
        return 0, 0
    finally:
        await connection.close()


async def consumer_count(amqp_url: str, queue: str) -> int:
    return (await queue_state(amqp_url, queue))[1]


async def queue_depth(amqp_url: str, queue: str) -> int:
    return (await queue_state(amqp_url, queue))[0]


def spawn(system: System, name: str, replica: int = 1) -> Process:
    """Start one process of a service (replica 1 is `name`, others `name#2`…), logging to its file.

    Replicas after the first get their own HTTP port (the requests API), listed in
    `system.replica_api_urls`."""
    key = name if replica == 1 else f"{name}#{replica}"
    env = {**system.env, **system.service_env.get(name, {})}
    if (own := service_databases().get(SCHEMA_OF[name])) is not None:
        env["CONTACTS_DATABASE_URL"] = own  # its schema on a server of its own
    if replica > 1:
        port = free_port()
        env["CONTACTS_HTTP_PORT"] = str(port)
        if name == "contacts-requests":
            system.replica_api_urls.append(f"http://127.0.0.1:{port}")
    system.processes[key] = launch(name, env, system.log_dir / f"{key.replace('#', '-')}.log")
    return system.processes[key]


async def wait_ready(system: System, consumers: int = 1, timeout: float = 30) -> None:
    """Until every process runs, the API answers and every service queue has `consumers` consumers."""

    async def ready() -> bool:
        for name, process in system.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{system.logs()[-5000:]}")
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                if (await client.get(f"{system.api_url}/readyz")).status_code != 200:
                    return False
        except httpx.HTTPError:
            return False
        for schema in SCHEMAS:
            if await consumer_count(system.amqp_url, f"{system.namespace}{schema}") < consumers:
                return False
        return True

    await eventually(ready, timeout=timeout, what="the services to be ready")


async def start(system: System, env: dict[str, str], replicas: int = 1) -> None:
    system.env = env
    for replica in range(1, replicas + 1):
        for name in SERVICES:
            spawn(system, name, replica)
    await wait_ready(system, consumers=replicas)


async def stop(system: System) -> None:
    for process in system.processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in system.processes.values():
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait()


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


@contextlib.asynccontextmanager
async def running_system(
    database_url: str,
    amqp_url: str,
    log_name: str,
    settings: dict[str, str] | None = None,
    replicas: int = 1,
    *,
    namespace: str | None = None,
    per_service: dict[str, dict[str, str]] | None = None,
) -> AsyncIterator[System]:
    """The three services (each `replicas` times) in a fresh namespace (or `namespace`) with their
    own SMTP sink, each also with its `per_service` settings; logs in `test-artifacts/<log_name>/`;
    everything is stopped and dropped afterwards."""
    namespace = namespace or new_namespace()
    http_port, smtp_port, inbox_port = free_port(), free_port(), free_port()
    sink = MailSink("127.0.0.1", smtp_port, inbox_port)
    sink.start()
    log_dir = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", log_name)
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    system = System(
        namespace=namespace,
        database_url=database_url,
        amqp_url=amqp_url,
        api_url=f"http://127.0.0.1:{http_port}",
        jwt_secret=uuid.uuid4().hex,
        sink=sink,
        log_dir=log_dir,
    )
    system.service_env.update(per_service or {})
    env = service_env(system, http_port, settings)
    try:
        await start(system, env, replicas)
        yield system
    finally:
        await stop(system)
        system.sink.stop()
        await drop_namespace(system.database_url, system.amqp_url, system.namespace)


async def drop_namespace(database_url: str, amqp_url: str, namespace: str) -> None:
    """Forget everything the services made in `namespace`: schemas, queues, the exchange."""
    for schema in SCHEMAS:
        conn = await asyncpg.connect(service_databases().get(schema, database_url))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}{schema}" CASCADE')
        finally:
            await conn.close()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for schema in SCHEMAS:
            for queue in (f"{namespace}{schema}", f"{namespace}{schema}.dlq", f"{namespace}{schema}.retry"):
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(f"{namespace}contacts")
    finally:
        await connection.close()



"""Helpers for cross-service tests: the three services as real processes, started through
their console scripts against the local PostgreSQL and RabbitMQ (or testcontainers where a
Docker engine answers), and a real SMTP sink.

`System` is the system under test as users and other systems see it: an HTTP API, an
exchange to publish on, and a mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aio_pika
import asyncpg
import httpx

from contacts_shared.auth import mint_token
from contacts_shared.bus import exchange_for, new_broker, publish_envelope
from contacts_shared.contracts import Contract, envelope_for
from contacts_shared.mailsink import MailSink

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
BIN = Path(sys.executable).parent
SERVICES = ("contacts-requests", "contacts-billing-check", "contacts-notifier")
SCHEMAS = ("requests", "billing_check", "notifier")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# --- the system under test ------------------------------------------------------------------------


TOKEN_LINK = re.compile(r"/requests/([0-9a-f-]{36})\?token=([A-Za-z0-9_\-%]+)")


@dataclass
class Mail:
    to: list[str]
    subject: str
    body: str

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
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    # --- talking to it like users and other systems do ---

    def jwt(self, nic: str) -> str:
        return mint_token(self.jwt_secret, nic)

    def api(self, nic: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.jwt(nic)}"} if nic else {}
        return httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=15)

    async def publish(self, *messages: Contract) -> None:
        broker = new_broker(self.amqp_url)
        await broker.connect()
        try:
            exchange = exchange_for(self.namespace)
            await broker.declare_exchange(exchange)
            for message in messages:
                await publish_envelope(broker, exchange, envelope_for(message))
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
            mail = Mail(to=list(m.rcpt_tos), subject=m.subject, body=m.text)
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
            response = await client.get("/v1/me/contacts")
            assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            if item["service"] == service:
                return item["contacts"]
        return None

    async def sql(self, schema: str, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url, server_settings={"search_path": f"{self.namespace}{schema}"})
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


def service_env(system: System, http_port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the three services run with: this process's, minus any CONTACTS_*,
    plus the settings of `system` (its namespace, infrastructure, sink and HTTP port)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")},
        "CONTACTS_DATABASE_URL": system.database_url,
        "CONTACTS_AMQP_URL": system.amqp_url,
        "CONTACTS_NAMESPACE": system.namespace,
        "CONTACTS_JWT_SECRET": system.jwt_secret,
        "CONTACTS_HTTP_PORT": str(http_port),
        "CONTACTS_PUBLIC_URL": system.api_url,
        "CONTACTS_SMTP_HOST": system.sink.smtp_host,
        "CONTACTS_SMTP_PORT": str(system.sink.smtp_port),
        "CONTACTS_MAIL_FROM": "contacts@example.test",
        **(extra or {}),
    }


async def _consumers(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.consumer_count
    except aio_pika.exceptions.ChannelClosed:
        return 0
    finally:
        await connection.close()


async def start(system: System, env: dict[str, str]) -> None:
    for name in SERVICES:
        log = open(system.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        system.processes[name] = subprocess.Popen(
            [str(BIN / name)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    async def ready() -> bool:
        for name, process in system.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{system.logs()}")
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                if (await client.get(f"{system.api_url}/readyz")).status_code != 200:
                    return False
        except httpx.HTTPError:
            return False
        for schema in SCHEMAS:
            if await _consumers(system.amqp_url, f"{system.namespace}{schema}") < 1:
                return False
        return True

    await eventually(ready, timeout=30, what="the three services to be ready")


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


async def drop_namespace(system: System) -> None:
    conn = await asyncpg.connect(system.database_url)
    try:
        for schema in SCHEMAS:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{system.namespace}{schema}" CASCADE')
    finally:
        await conn.close()
    connection = await aio_pika.connect(system.amqp_url)
    try:
        channel = await connection.channel()
        for schema in SCHEMAS:
            for queue in (f"{system.namespace}{schema}", f"{system.namespace}{schema}.dlq"):
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(f"{system.namespace}contacts")
    finally:
        await connection.close()



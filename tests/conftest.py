"""Fixtures for cross-service tests: the three services as real processes, started through
their console scripts against the local PostgreSQL and RabbitMQ (or testcontainers where a
Docker engine answers), and a real SMTP sink.

Each test gets its own CONTACTS_NAMESPACE, hence its own exchange, queues and schemas, so
tests run in any order and twice in a row; everything is dropped afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from contacts_shared.mailsink import MailSink
from support import ARTIFACTS, System, drop_namespace, free_port, service_env, start, stop


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[tuple[str, str]]:
    """(database URL, AMQP URL): the CONTACTS_TEST_* variables, else containers, else local."""
    db_url = os.environ.get("CONTACTS_TEST_DATABASE_URL")
    amqp_url = os.environ.get("CONTACTS_TEST_AMQP_URL")
    if db_url and amqp_url:
        yield db_url, amqp_url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        with PostgresContainer("postgres:16-alpine") as pg, RabbitMqContainer("rabbitmq:3.13-alpine") as mq:
            pg_url = pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
            mq_url = f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"
            yield db_url or pg_url, amqp_url or mq_url
        return
    yield (
        db_url or "postgresql://postgres@127.0.0.1:5432/postgres",
        amqp_url or "amqp://guest:guest@127.0.0.1:5672/",
    )


@pytest.fixture
def system_settings() -> dict[str, str]:
    """Extra CONTACTS_* settings for the system under test; override in a test module."""
    return {}


@pytest.fixture
async def system(
    infrastructure: tuple[str, str], system_settings: dict[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[System]:
    database_url, amqp_url = infrastructure
    namespace = f"t{uuid.uuid4().hex[:10]}_"
    http_port, smtp_port, inbox_port = free_port(), free_port(), free_port()
    sink = MailSink("127.0.0.1", smtp_port, inbox_port)
    sink.start()
    log_dir = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
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
    env = service_env(system, http_port, system_settings)
    try:
        await start(system, env)
        yield system
    finally:
        await stop(system)
        sink.stop()
        await drop_namespace(system)

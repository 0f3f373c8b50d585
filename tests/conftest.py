"""Fixtures for cross-service tests: the three services as real processes, started through
their console scripts against the local PostgreSQL and RabbitMQ (or testcontainers where a
Docker engine answers), and a real SMTP sink.

Each test gets its own CONTACTS_NAMESPACE, hence its own exchange, queues and schemas, so
tests run in any order and twice in a row; everything is dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
from capture import MessageCapture
from support import System, running_system


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
    async with running_system(database_url, amqp_url, request.node.name, system_settings) as system:
        # Every message on the exchange; at teardown, the services' ones must match docs/schemas.
        system.capture = MessageCapture(amqp_url, f"{system.namespace}contacts")
        await system.capture.start()
        try:
            yield system
        finally:
            await system.capture.stop()
    system.capture.assert_contracts_kept()

"""Fixtures for cross-service tests: the three services as real processes, started through
their console scripts against the PostgreSQL and RabbitMQ the root conftest chose (the local
servers, or testcontainers with CONTACTS_TEST_INFRA=containers), and a real SMTP sink.

Each test gets its own CONTACTS_NAMESPACE, hence its own exchange, queues and schemas, so
tests run in any order and twice in a row; everything is dropped afterwards.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from capture import MessageCapture
from contract.node import PACKAGE_OF_FIXTURE, begin_install
from support import System, running_system


def pytest_collection_finish(session: pytest.Session) -> None:
    """Begin the Node.js installs the selected tests need (a minute or two on a fresh machine,
    mostly downloading), so that they run alongside the tests before them."""
    if session.config.option.collectonly:
        return
    for fixture, package in PACKAGE_OF_FIXTURE.items():
        if any(fixture in getattr(item, "fixturenames", ()) for item in session.items):
            begin_install(package)


@pytest.fixture(scope="session")
def infrastructure() -> tuple[str, str]:
    """(database URL, AMQP URL), as the root conftest chose them (CONTACTS_TEST_INFRA)."""
    return os.environ["CONTACTS_TEST_DATABASE_URL"], os.environ["CONTACTS_TEST_AMQP_URL"]


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

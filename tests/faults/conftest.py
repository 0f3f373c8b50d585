"""Fault tests run against their OWN PostgreSQL and RabbitMQ, started here for the session, so
that restarting them does not disturb anyone else using the machine's shared servers.

Each run prints a table of what every fault scenario did to the flows in flight.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults.audit import RESULTS, SUMMARY_COLUMNS
from faults.flows import assert_no_secrets_in_logs
from own_nodes import OwnPostgres, OwnRabbit, chown, own_rabbit, postgres_bin_dir
from support import System, free_port, running_system


@dataclass
class OwnInfrastructure:
    postgres: OwnPostgres
    rabbit: OwnRabbit


@pytest.fixture(scope="session")
def own_infrastructure() -> Iterator[OwnInfrastructure]:
    """A throwaway PostgreSQL cluster and RabbitMQ node for this session only."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not shutil.which("rabbitmq-server"):
        pytest.fail("fault tests need PostgreSQL and RabbitMQ server binaries: apt-get install postgresql rabbitmq-server")
    root = Path(tempfile.mkdtemp(prefix="contacts-faults-"))
    os.chmod(root, 0o755)
    pg_dir = root / "pg"
    pg_dir.mkdir()
    chown(pg_dir, "postgres")
    postgres = OwnPostgres(pg_dir, free_port(), bin_dir)
    rabbit = own_rabbit(root / "mq")
    try:
        postgres.start()
        rabbit.start()
        yield OwnInfrastructure(postgres, rabbit)
    finally:
        rabbit.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def replicas() -> int:
    """How many processes of each service; override in a test module or with parametrize."""
    return 1


@pytest.fixture
def service_settings() -> dict[str, str]:
    """Settings (CONTACTS_*) the services run with besides the usual; override with parametrize."""
    return {}


@pytest.fixture
def database_url(own_infrastructure: OwnInfrastructure) -> str:
    """Where the services under fault keep their data; a module may override it (a primary with
    its standby, say)."""
    return own_infrastructure.postgres.url


@pytest.fixture
def amqp_url(own_infrastructure: OwnInfrastructure) -> str:
    """The broker the services under fault use; a module may override it (a cluster, say)."""
    return own_infrastructure.rabbit.url


@pytest.fixture
async def faulty_system(
    database_url: str, amqp_url: str, replicas: int, service_settings: dict[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[System]:
    """The three services on the fault suite's own PostgreSQL and RabbitMQ (or what a module gives)."""
    async with running_system(
        database_url,
        amqp_url,
        f"faults-{request.node.name}",
        replicas=replicas,
        settings=service_settings,
    ) as system:
        yield system
    # Everything the processes logged during the scenario, searched for every mailed token.
    assert_no_secrets_in_logs(system)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    widths = [max(len(str(row[i])) for row in [SUMMARY_COLUMNS, *RESULTS]) for i in range(len(SUMMARY_COLUMNS))]
    terminalreporter.section("faults: what happened to the flows in flight")
    for row in [SUMMARY_COLUMNS, *RESULTS]:
        terminalreporter.write_line(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))

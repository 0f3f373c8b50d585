"""Security tests: each tries an attack against the running services (real PostgreSQL, RabbitMQ
and SMTP) and records the answer in the table printed at the end (security.table)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from security.table import TRIED, as_markdown
from seed import feed_world
from support import System, running_system

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def world_settings() -> dict[str, str]:
    """Extra CONTACTS_* settings of a module's system; override in the module."""
    return {}


@pytest.fixture(scope="module")
async def world(infrastructure: tuple[str, str], world_settings: dict[str, str], request: pytest.FixtureRequest) -> AsyncIterator[System]:
    """One system per module (the attacks of a module do not disturb each other), fed with the
    seed's accounts, hosting plan and payment method."""
    database_url, amqp_url = infrastructure
    async with running_system(database_url, amqp_url, f"security-{request.module.__name__}", world_settings) as system:
        yield await feed_world(system)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TRIED:
        return
    table = as_markdown()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "security.md").write_text(table)
    terminalreporter.section("security: the attacks tried and what the system answered")
    for line in table.splitlines():
        terminalreporter.write_line(line)

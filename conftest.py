"""Where every test finds PostgreSQL and RabbitMQ (the CONTACTS_TEST_* variables), chosen once
for the whole run by CONTACTS_TEST_INFRA:

- `local` (the default): the servers on this machine, which scripts/test starts if they are down;
- `containers`: fresh ones from testcontainers, started before any test module is imported and
  removed at the end; needs a Docker engine, and says so plainly when there is none.

The fault suite's private nodes come from the server binaries in either case.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from contextlib import ExitStack
from urllib.parse import urlsplit

import pytest

INFRA_MODES = ("local", "containers")
POSTGRES_IMAGE = "postgres:15"  # the major version of the servers the tests run against locally
RABBITMQ_IMAGE = "rabbitmq:3.13"
LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"

_containers = ExitStack()


def infra_mode(environ: Mapping[str, str]) -> str:
    """The value of CONTACTS_TEST_INFRA, checked (a usage error names the accepted values)."""
    mode = environ.get("CONTACTS_TEST_INFRA", "local") or "local"
    if mode not in INFRA_MODES:
        raise pytest.UsageError(f"CONTACTS_TEST_INFRA={mode!r}: expected one of {', '.join(INFRA_MODES)}")
    return mode


def docker_engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`docker info` failed: {last}"
    return None


def start_containers() -> tuple[str, str]:
    """PostgreSQL and RabbitMQ in containers: (database URL of a superuser, AMQP URL). Tests that
    run `rabbitmqctl` find the broker's container in CONTACTS_TEST_RABBITMQ_CONTAINER."""
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer

    password = secrets.token_urlsafe(16)
    pg = _containers.enter_context(
        PostgresContainer(POSTGRES_IMAGE, username="postgres", password=password, dbname="postgres", driver=None)
    )
    mq = _containers.enter_context(RabbitMqContainer(RABBITMQ_IMAGE))
    amqp_url = f"amqp://{mq.username}:{mq.password}@{mq.get_container_host_ip()}:{mq.get_exposed_port(mq.port)}/%2f"
    os.environ["CONTACTS_TEST_RABBITMQ_CONTAINER"] = mq.get_wrapped_container().id
    return pg.get_connection_url(), amqp_url


def pytest_configure(config: pytest.Config) -> None:
    if infra_mode(os.environ) == "containers":
        problem = docker_engine_problem()
        if problem:
            raise pytest.UsageError(
                f"CONTACTS_TEST_INFRA=containers needs a Docker engine, and {problem}; "
                "unset it to use the local PostgreSQL and RabbitMQ"
            )
        database_url, amqp_url = start_containers()
        os.environ["CONTACTS_TEST_DATABASE_URL"] = database_url
        os.environ["CONTACTS_TEST_AMQP_URL"] = amqp_url
    else:
        os.environ.setdefault("CONTACTS_TEST_DATABASE_URL", LOCAL_DATABASE_URL)
        os.environ.setdefault("CONTACTS_TEST_AMQP_URL", LOCAL_AMQP_URL)


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def pytest_report_header(config: pytest.Config) -> str:
    database_url, amqp_url = os.environ["CONTACTS_TEST_DATABASE_URL"], os.environ["CONTACTS_TEST_AMQP_URL"]
    return (
        f"infrastructure ({infra_mode(os.environ)}): PostgreSQL {without_password(database_url)}, "
        f"RabbitMQ {without_password(amqp_url)}"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    _containers.close()



def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test fails the run: whatever a test needs is installed by scripts/test, so a
    skip would only hide a test that did not run (its reason is in the summary)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter and reporter.stats.get("skipped") and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = len(terminalreporter.stats.get("skipped", []))
    if skipped:
        terminalreporter.write_line(f"{skipped} skipped: the default run skips nothing, so this run fails", red=True)

"""Fault tests run against their OWN PostgreSQL and RabbitMQ, started here for the session, so
that restarting them does not disturb anyone else using the machine's shared servers.

Each run prints a table of what every fault scenario did to the flows in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults.audit import RESULTS, SUMMARY_COLUMNS
from faults.flows import assert_no_secrets_in_logs
from support import System, free_port, running_system


def _as(user: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run `argv` as `user` when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


@dataclass
class OwnPostgres:
    directory: Path
    port: int
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def options(self) -> str:
        return f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"

    def _pg_ctl(self, *args: str) -> None:
        _as(
            "postgres",
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-l",
                str(self.directory / "log"),
                *args,
            ],
            timeout=120,
        )

    def start(self) -> None:
        _as(
            "postgres",
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.directory / "data"),
                "-U",
                "postgres",
                "--auth=trust",
            ],
            timeout=120,
        )
        self._pg_ctl("-o", self.options, "-w", "start")

    async def restart(self) -> None:
        """A fast shutdown (every connection is cut) and a start, as an operator would do."""
        await asyncio.to_thread(self._pg_ctl, "-m", "fast", "-w", "restart")

    async def down_for(self, seconds: float) -> None:
        """Stop the server (fast: every connection is cut), keep it down `seconds`, start it."""
        await asyncio.to_thread(self._pg_ctl, "-m", "fast", "-w", "stop")
        await asyncio.sleep(seconds)  # the outage itself
        await asyncio.to_thread(self._pg_ctl, "-o", self.options, "-w", "start")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._pg_ctl("-m", "immediate", "-w", "stop")


@dataclass
class OwnRabbit:
    directory: Path
    node: str
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def _await_startup(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                self.ctl("await_startup", "--timeout", "60")
                return
            except RuntimeError:
                # The node registers with epmd a moment after `-detached` returns.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def start(self) -> None:
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        self._await_startup()

    async def restart(self) -> None:
        """Stop the broker application (every connection is closed) and start it again."""

        def bounce() -> None:
            self.ctl("stop_app")
            self.ctl("start_app")
            self._await_startup()

        await asyncio.to_thread(bounce)

    async def down_for(self, seconds: float) -> None:
        """Stop the broker application (every connection is closed), keep it down `seconds`,
        start it again."""
        await asyncio.to_thread(self.ctl, "stop_app")
        await asyncio.sleep(seconds)  # the outage itself
        await asyncio.to_thread(self.ctl, "start_app")
        await asyncio.to_thread(self._await_startup)

    def queues(self, prefix: str) -> dict[str, tuple[int, int]]:
        """{queue: (ready messages, unacknowledged messages)} of the queues named `prefix…`."""
        out = self.ctl(
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        )
        found = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].startswith(prefix):
                found[parts[0]] = (int(parts[1]), int(parts[2]))
        return found

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("stop", timeout=60)


@dataclass
class OwnInfrastructure:
    postgres: OwnPostgres
    rabbit: OwnRabbit


def _chown(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                shutil.chown(Path(root) / name, user)


@pytest.fixture(scope="session")
def own_infrastructure() -> Iterator[OwnInfrastructure]:
    """A throwaway PostgreSQL cluster and RabbitMQ node for this session only."""
    bins = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[4]),
    )
    if not bins or not shutil.which("rabbitmq-server"):
        pytest.fail("fault tests need PostgreSQL and RabbitMQ server binaries: apt-get install postgresql rabbitmq-server")
    root = Path(tempfile.mkdtemp(prefix="contacts-faults-"))
    os.chmod(root, 0o755)
    pg_dir, mq_dir = root / "pg", root / "mq"
    pg_dir.mkdir()
    mq_dir.mkdir()
    _chown(pg_dir, "postgres")
    (mq_dir / "enabled_plugins").write_text("[].\n")
    (mq_dir / "rabbitmq.conf").write_text("loopback_users = none\n")
    _chown(mq_dir, "rabbitmq")
    postgres = OwnPostgres(pg_dir, free_port(), Path(bins[-1]).parent)
    node = f"faults{uuid.uuid4().hex[:8]}@localhost"
    mq_port = free_port()
    rabbit = OwnRabbit(
        mq_dir,
        node,
        mq_port,
        {
            **os.environ,
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_NODE_PORT": str(mq_port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(mq_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(mq_dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(mq_dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(mq_dir / "rabbitmq"),
        },
    )
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
async def faulty_system(
    own_infrastructure: OwnInfrastructure, replicas: int, service_settings: dict[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[System]:
    """The three services on the fault suite's own PostgreSQL and RabbitMQ."""
    infra = own_infrastructure
    async with running_system(
        infra.postgres.url,
        infra.rabbit.url,
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

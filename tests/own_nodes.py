"""PostgreSQL clusters and RabbitMQ nodes of a test's own, started from this machine's binaries
in a temporary directory, so that stopping or reconfiguring them disturbs nobody else using the
shared servers (the fault suite's outages, a broker loading the deployment's definitions)."""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from support import free_port


def as_user(user: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run `argv` as `user` when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


@dataclass
class OwnPostgres:
    directory: Path
    port: int
    bin_dir: Path
    settings: str = ""  # more server options: "-c name=value …"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def options(self) -> str:
        return f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 {self.settings}"

    def _pg_ctl(self, *args: str) -> None:
        as_user(
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
        as_user(
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
        self.serve()

    def serve(self) -> None:
        """Start the server on the data directory as it is."""
        self._pg_ctl("-o", self.options, "-w", "start")

    async def restart(self) -> None:
        """A fast shutdown (every connection is cut) and a start, as an operator would do."""
        await asyncio.to_thread(self._pg_ctl, "-m", "fast", "-w", "restart")

    async def down_for(self, seconds: float) -> None:
        """Stop the server (fast: every connection is cut), keep it down `seconds`, start it."""
        await asyncio.to_thread(self._pg_ctl, "-m", "fast", "-w", "stop")
        await asyncio.sleep(seconds)  # the outage itself
        await asyncio.to_thread(self._pg_ctl, "-o", self.options, "-w", "start")

    def promote(self) -> None:
        """A standby becomes a primary."""
        self._pg_ctl("-w", "promote")

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


class Startable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=Startable)


@contextlib.contextmanager
def started_in_a_new_directory(prefix: str, make: Callable[[Path], S]) -> Iterator[S]:
    """A server (or cluster) of the tests' own, made by `make` in a new temporary directory and
    started; stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)  # the servers run as their own users, who must reach their folders
    server = make(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def chown(path: Path, user: str) -> None:
    """Give `path` and what it holds to `user` when we are root (the servers' own users)."""
    if os.geteuid() == 0:
        shutil.chown(path, user)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                shutil.chown(Path(root) / name, user)


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL's binaries on this machine, if any."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(bins[-1]).parent if bins else None


def own_rabbit(directory: Path, config: str = "") -> OwnRabbit:
    """A RabbitMQ node (not started) living in `directory`, with no plugins and `config` added to
    its rabbitmq.conf (guest may connect from anywhere unless the config says otherwise)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "enabled_plugins").write_text("[].\n")
    (directory / "rabbitmq.conf").write_text("loopback_users = none\n" + config)
    chown(directory, "rabbitmq")
    node = f"own{uuid.uuid4().hex[:8]}@localhost"
    port = free_port()
    return OwnRabbit(
        directory,
        node,
        port,
        {
            **os.environ,
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
        },
    )

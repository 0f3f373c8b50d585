"""`contacts dev`: the three services and a mail sink in one terminal, their output prefixed
with their names, the demo data loaded once they are ready; Ctrl-C stops everything in order."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from contacts_shared.settings import DEV_JWT_SECRET, CommonSettings
from contacts_tools import demo
from contacts_tools.commands import (
    PROGRAM,
    SERVICE_PROGRAMS,
    SERVICE_QUEUES,
    STOP_GRACE_SECONDS,
    CliError,
    common_settings,
    one_line,
    publish_all,
)

if TYPE_CHECKING:
    import aio_pika
    from contacts_tools import mailsink

@dataclass(frozen=True)
class ChildProgram:
    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class UnexpectedExit:
    name: str
    status: int


class PrefixedOutput:
    """Writes `source | line` to stdout; lines from threads and tasks never interleave."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._lock = threading.Lock()

    def __call__(self, source: str, line: str) -> None:
        with self._lock:
            print(f"{source:<{self.width}} | {line}", flush=True)


Output = Callable[[str, str], None]


def find_program(name: str) -> str:
    """The console script installed beside the running Python (the workspace's venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise CliError(f"cannot find the {name} program beside {sys.executable} or on PATH (run `uv sync` in the workspace)")


async def pump_lines(name: str, stream: asyncio.StreamReader, out: Output) -> None:
    while line := await stream.readline():
        out(name, line.decode("utf-8", errors="replace").rstrip("\r\n"))


async def terminate_all(processes: dict[str, asyncio.subprocess.Process], grace: float, out: Output) -> None:
    """SIGTERM every running child, then SIGKILL those still running after `grace` seconds."""
    running = {name: p for name, p in processes.items() if p.returncode is None}
    for process in running.values():
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    if not running:
        return
    waits = [asyncio.create_task(p.wait()) for p in running.values()]
    await asyncio.wait(waits, timeout=grace)
    for name, process in running.items():
        if process.returncode is None:
            out(name, f"still running {grace:g}s after SIGTERM: killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    await asyncio.gather(*waits)


async def supervise(
    programs: Sequence[ChildProgram],
    env: dict[str, str],
    stop: asyncio.Event,
    out: Output,
    grace: float = STOP_GRACE_SECONDS,
) -> UnexpectedExit | None:
    """Run the programs until `stop` is set or one of them exits; then stop them all.

    Returns the child that exited on its own (which ends the session), or None if stopped."""
    processes: dict[str, asyncio.subprocess.Process] = {}
    try:
        for program in programs:
            processes[program.name] = await asyncio.create_subprocess_exec(
                *program.argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Own session: Ctrl-C in the terminal reaches only us, and we stop the children
                # in order, instead of each of them catching the same SIGINT.
                start_new_session=True,
                limit=1 << 20,
            )
    except OSError as exc:
        await terminate_all(processes, grace, out)
        raise CliError(f"cannot start {program.name}: {exc}", status=1) from None

    pumps = [asyncio.create_task(pump_lines(name, p.stdout, out)) for name, p in processes.items() if p.stdout]
    exits = {asyncio.create_task(p.wait()): name for name, p in processes.items()}
    stop_requested = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({*exits, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
    exited = None
    if stop_requested not in done:
        name = next(exits[task] for task in done if task in exits)
        exited = UnexpectedExit(name, processes[name].returncode or 0)
    stop_requested.cancel()
    await terminate_all(processes, grace, out)
    await asyncio.gather(*exits, *pumps)
    return exited


def _answers_200(url: str) -> bool:
    # No proxy: the service is on this machine whatever http_proxy says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


async def _has_consumer(connection: aio_pika.abc.AbstractConnection, queue: str) -> bool:
    import aio_pika

    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return (declared.declaration_result.consumer_count or 0) > 0
    except aio_pika.exceptions.ChannelClosed:  # not declared yet
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def wait_until_ready(health_url: str, settings: CommonSettings, timeout: float) -> None:
    """Wait until the API answers and every service consumes its queue; TimeoutError if not."""
    import aio_pika
    from contacts_shared.bus import queue_for

    deadline = time.monotonic() + timeout

    async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
        while not await condition():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            await asyncio.sleep(0.25)  # the interval between checks, not a guess at readiness

    await until(lambda: asyncio.to_thread(_answers_200, health_url), f"{health_url} to answer")
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        for service in SERVICE_QUEUES:
            queue = queue_for(settings.namespace, service).name
            await until(lambda q=queue: _has_consumer(connection, q), f"a consumer on queue {queue}")
    finally:
        await connection.close()


async def announce_when_ready(
    health_url: str, settings: CommonSettings, timeout: float, load_demo: bool, out: Output
) -> None:
    try:
        await wait_until_ready(health_url, settings, timeout)
    except TimeoutError as exc:
        out(PROGRAM, f"not ready after {timeout:g}s (waiting for {exc}); see the services' output above")
        if load_demo:
            out(PROGRAM, "demo data not loaded: run `contacts demo` once the services are up")
        return
    except Exception as exc:  # noqa: BLE001 - a readiness probe never takes the session down
        out(PROGRAM, f"cannot check readiness: {one_line(str(exc))}")
        return
    out(PROGRAM, "the services are up")
    if load_demo:
        try:
            await publish_all(settings, demo.demo_messages(), lambda e, m: out("demo", f"{e.type:<24} {demo.describe(m)}"))
        except CliError as exc:
            out("demo", str(exc))


def dev_environment(args: argparse.Namespace, out: Output) -> dict[str, str]:
    """The children's environment: the user's, plus what makes them work together locally."""
    env = dict(os.environ)
    # A local session: the development secret, sign-in and plain http are what it is for.
    env["CONTACTS_ENV"] = "development"
    # The published development secret only ever when CONTACTS_JWT_SECRET is unset, said out loud.
    if not env.get("CONTACTS_JWT_SECRET"):
        env["CONTACTS_JWT_SECRET"] = DEV_JWT_SECRET
        out(PROGRAM, f"CONTACTS_JWT_SECRET was not set: using the development secret {DEV_JWT_SECRET}")
    if not env.get("CONTACTS_TOKEN_SECRET"):
        # Nobody needs to know this one: a random key for this run (codes mailed in an earlier
        # run stop working; their confirmers ask for new ones).
        env["CONTACTS_TOKEN_SECRET"] = secrets.token_urlsafe(32)
    # The notifier mails the in-process sink, whatever the shell says about SMTP.
    env.update(
        CONTACTS_SMTP_HOST="127.0.0.1",
        CONTACTS_SMTP_PORT=str(args.smtp_port),
        CONTACTS_SMTP_STARTTLS="false",
        PYTHONUNBUFFERED="1",  # lines appear as they are written, not when a buffer fills
    )
    env.pop("CONTACTS_SMTP_USER", None)
    env.pop("CONTACTS_SMTP_PASSWORD", None)
    env.setdefault("CONTACTS_PUBLIC_URL", f"http://127.0.0.1:{http_port_from(env)}")
    # A local session has no identity provider: the pages' development sign-in stands in for it.
    env.setdefault("CONTACTS_DEV_LOGIN", "1")
    return env


def http_port_from(env: dict[str, str]) -> int:
    value = env.get("CONTACTS_HTTP_PORT", "8000")
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise CliError(f"setting CONTACTS_HTTP_PORT is invalid: {value!r} is not a port number")
    return int(value)


def print_welcome(env: dict[str, str], sink: mailsink.MailSink, secret_was_set: bool, out: Output) -> None:
    port = http_port_from(env)
    token = "contacts token aa11111-ovh"
    if not secret_was_set:
        token = f"CONTACTS_JWT_SECRET={DEV_JWT_SECRET} {token}"
    for line in (
        f"Pages (sign in):   http://127.0.0.1:{port}/contacts   (development sign-in: type a NIC)",
        f"API (try it out):  http://127.0.0.1:{port}/docs",
        f"Mail inbox:        {sink.inbox_url}   (SMTP on {sink.smtp_host}:{sink.smtp_port})",
        f"A user's JWT:      {token}",
        "Demo data:         contacts demo   (or start with `contacts dev --demo`)",
        "Ctrl-C stops everything.",
    ):
        out(PROGRAM, line)


async def run_dev_async(args: argparse.Namespace) -> int:
    from contacts_tools import mailsink

    settings = common_settings()
    programs = [ChildProgram(name, (find_program(name),)) for name in SERVICE_PROGRAMS]
    out = PrefixedOutput(max(len(name) for name in (*SERVICE_PROGRAMS, PROGRAM)))
    secret_was_set = bool(os.environ.get("CONTACTS_JWT_SECRET"))
    env = dev_environment(args, out)

    sink = mailsink.MailSink(
        "127.0.0.1",
        args.smtp_port,
        args.inbox_port,
        on_message=lambda m: out("mailsink", f"mail #{m.id} to {', '.join(m.rcpt_tos)}: {m.subject}"),
    )
    try:
        sink.start()
    except OSError as exc:
        raise CliError(
            f"cannot start the mail sink on ports {args.smtp_port}/{args.inbox_port}: {exc.strerror or exc} "
            "(is another one running? choose others with --smtp-port/--inbox-port)",
            status=1,
        ) from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop() -> None:
        if not stop.is_set():
            out(PROGRAM, f"stopping the services (up to {STOP_GRACE_SECONDS:g}s)...")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop)

    health_url = f"http://127.0.0.1:{http_port_from(env)}/healthz"
    readiness: asyncio.Task[None] | None = None
    try:
        print_welcome(env, sink, secret_was_set, out)
        readiness = asyncio.create_task(announce_when_ready(health_url, settings, args.ready_timeout, args.demo, out))
        exited = await supervise(programs, env, stop, out)
    finally:
        if readiness:
            readiness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await readiness
        sink.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if exited:
        raise CliError(f"{exited.name} exited unexpectedly (status {exited.status}); stopped everything", status=1)
    out(PROGRAM, "stopped")
    return 0


def run_dev(args: argparse.Namespace) -> int:
    return asyncio.run(run_dev_async(args))

"""`contacts`: the developer's command line: publish messages as other systems do, mint tokens,
load demo data, run the whole system in one terminal, or just the mail sink.

Every failure ends with one line on stderr naming what is wrong: exit status 2 for bad input
or settings, 1 for a failure at run time (RabbitMQ unreachable, a service that died...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from contacts_shared import bus_access, demo
from contacts_shared.auth import mint_token
from contacts_shared.contracts import MESSAGE_TYPES, Contract, Envelope, envelope_for
from contacts_shared.settings import DEV_JWT_SECRET, CommonSettings, load_settings

if TYPE_CHECKING:
    import aio_pika

    from contacts_shared import mailsink

# The broker client and the SMTP server are imported by the commands that use them: that halves
# the start-up time of `contacts --help` and `contacts token`.

PROGRAM = "contacts"
SERVICE_PROGRAMS = ("contacts-requests", "contacts-billing-check", "contacts-notifier")
# The services' queues: each must have a consumer before the services count as up, and before
# demo data is published (a message sent while a queue is not yet bound would be dropped).
SERVICE_QUEUES = ("requests", "billing_check", "notifier")
STOP_GRACE_SECONDS = 10.0


class CliError(Exception):
    """Ends the command with one line on stderr and the given exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# --- shared helpers -------------------------------------------------------------------------------


def masked_url(url: str) -> str:
    """The URL with its password hidden, for error messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def one_line(text: str) -> str:
    return " ".join(text.split())


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem, naming its field, e.g. `field 'zone': Input should be 'EU', 'CA' or 'US'`."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "(data)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return one_line(f"field {field!r}: {message}{more}")


def parse_message_data(routing_key: str, text: str) -> Contract:
    """Validate JSON `data` against the contract of `routing_key`, or raise CliError."""
    model = MESSAGE_TYPES.get(routing_key)
    if model is None:
        raise CliError(f"unknown routing key {routing_key!r}; known: {', '.join(MESSAGE_TYPES)}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"the data must be a JSON object, not {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise CliError(f"invalid {routing_key} data: {describe_validation_error(exc)}") from None


async def publish_all(
    settings: CommonSettings,
    messages: Sequence[Contract],
    on_published: Callable[[Envelope, Contract], None],
    message_id: uuid.UUID | None = None,
) -> None:
    """Publish each message (persistent, confirmed by the broker) to the namespace's exchange."""
    from contacts_shared.bus import exchange_for, new_broker
    from contacts_shared.outbox import publish_envelope

    # The AMQP clients log connection failures on their own; the user gets our one line instead.
    for client in ("aio_pika", "aiormq"):
        logging.getLogger(client).setLevel(logging.CRITICAL)
    broker = new_broker(settings.amqp_url)
    try:
        await broker.connect()
        # Looked up, not declared: an integrating system's user may not configure it (the
        # services declare it when they start).
        exchange = exchange_for(settings.namespace, declare=False)
        await broker.declare_exchange(exchange)
        for message in messages:
            envelope = envelope_for(message, message_id)
            await publish_envelope(broker, exchange, envelope)
            on_published(envelope, message)
    except Exception as exc:  # noqa: BLE001 - whatever the client raises, the user gets one line
        raise CliError(
            f"cannot publish to RabbitMQ at {masked_url(settings.amqp_url)}: {one_line(str(exc)) or type(exc).__name__}",
            status=1,
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await broker.stop()


def common_settings() -> CommonSettings:
    return load_settings(CommonSettings, PROGRAM)


# --- contacts publish -----------------------------------------------------------------------------


def run_publish(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.json == "-" else args.json
    message = parse_message_data(args.routing_key, text)
    settings = common_settings()
    asyncio.run(
        publish_all(settings, [message], lambda envelope, _: print(envelope.message_id), message_id=args.message_id)
    )
    return 0


# --- contacts docs --------------------------------------------------------------------------------


def run_docs(args: argparse.Namespace) -> int:
    from contacts_shared import contract_docs

    docs_dir = Path(args.out)
    try:
        import contacts_billing_check  # noqa: F401 - read by the generator
        import contacts_notifier
        import contacts_requests
    except ImportError as exc:
        raise CliError(f"needs the whole workspace ({exc.name} is not installed): run it in the project with `uv run`") from None
    if args.check:
        stale = contract_docs.stale(docs_dir)
        if stale:
            raise CliError(
                f"out of date with the code: {', '.join(stale)}; regenerate with `{contract_docs.REGENERATE}`", status=1
            )
        print(f"{docs_dir}: up to date")
        return 0
    changed = contract_docs.write(docs_dir)
    for name in changed:
        print(docs_dir / name)
    print(f"{docs_dir}: {len(changed)} file(s) written or removed" if changed else f"{docs_dir}: up to date")
    return 0


# --- contacts token -------------------------------------------------------------------------------


def run_token(args: argparse.Namespace) -> int:
    secret = os.environ.get("CONTACTS_JWT_SECRET")
    if not secret:
        raise CliError(
            "CONTACTS_JWT_SECRET is not set: set it to the secret of the requests service "
            f"(under `contacts dev` without one, it is {DEV_JWT_SECRET})"
        )
    try:
        print(mint_token(secret, args.nic, args.ttl))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return 0


# --- contacts demo --------------------------------------------------------------------------------


def print_published(envelope: Envelope, message: Contract) -> None:
    print(f"{envelope.type:<24} {demo.describe(message)}", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    settings = common_settings()
    asyncio.run(publish_all(settings, demo.demo_messages(), print_published))
    return 0


# --- contacts mailsink ----------------------------------------------------------------------------


def run_mailsink(args: argparse.Namespace) -> int:
    from contacts_shared import mailsink

    return mailsink.run_until_interrupted(args.host, args.smtp_port, args.http_port)


# --- contacts dev: the three services and a mail sink in one terminal -----------------------------


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
    from contacts_shared import mailsink

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


# --- the parser -----------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number")
    return value


def _subcommand(
    commands: argparse._SubParsersAction, name: str, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


ENVIRONMENT_HELP = """\
settings (environment):
  CONTACTS_AMQP_URL    RabbitMQ (default amqp://guest:guest@127.0.0.1:5672/%2f)
  CONTACTS_NAMESPACE   prefix of the exchange, queue and schema names (default none)
  CONTACTS_JWT_SECRET  the requests service's JWT secret (for `contacts token`)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Developer tools for the contacts services: publish messages as other systems do, "
        "mint a user's JWT, load demo data, run everything locally.",
        epilog=ENVIRONMENT_HELP
        + """
getting started (PostgreSQL and RabbitMQ running locally):
  contacts dev --demo                 # the three services, a mail sink and demo data
  contacts token aa11111-ovh          # a JWT for the API (see what `contacts dev` printed)
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    publish = _subcommand(
        commands,
        "publish",
        "publish one message on the contacts exchange",
        "Validate DATA against the contract of ROUTING_KEY, wrap it in an envelope (new message_id, "
        "version, occurred_at) and publish it, persistent and confirmed by the broker, on the exchange "
        "{CONTACTS_NAMESPACE}contacts. Prints the message_id. Invalid data exits with status 2 and "
        "nothing is published.",
        """\
  contacts publish account.upserted '{"nic": "aa11111-ovh", "email": "owner@shop-example.test", "zone": "EU"}'
  contacts publish service.upserted '{"service": "shop-example.com", "type": "domain",
      "admin": "aa11111-ovh", "tech": "cc33333-ovh", "billing": "aa11111-ovh"}'
  echo '{"invoice_id": "inv-1"}' | contacts publish invoice.paid -
""",
    )
    publish.add_argument(
        "routing_key", metavar="ROUTING_KEY", help="message type, one of: " + ", ".join(MESSAGE_TYPES)
    )
    publish.add_argument("json", metavar="DATA", help="the message's data as a JSON object, or - to read it from stdin")
    publish.add_argument(
        "--message-id",
        type=uuid.UUID,
        metavar="UUID",
        help="reuse this message_id (to see that consumers ignore a duplicate); default: a new one",
    )
    publish.set_defaults(run=run_publish)

    token = _subcommand(
        commands,
        "token",
        "print a user's JWT for the API",
        "Print a JWT for NIC (HS256, signed with CONTACTS_JWT_SECRET, like the identity provider's), "
        "for `Authorization: Bearer ...` or the API docs' Authorize button.",
        """\
  contacts token aa11111-ovh
  curl -H "Authorization: Bearer $(contacts token aa11111-ovh)" http://127.0.0.1:8000/v1/me/contacts
""",
    )
    token.add_argument("nic", metavar="NIC", help="the account's NIC handle, e.g. aa11111-ovh")
    token.add_argument("--ttl", type=positive_int, default=3600, metavar="SECONDS", help="lifetime (default 3600)")
    token.set_defaults(run=run_token)

    bus_access.add_command(commands)

    docs = _subcommand(
        commands,
        "docs",
        "write the contract documents (AsyncAPI, OpenAPI, JSON Schemas, examples) from the code",
        "Generate, from the message models and the HTTP API, docs/asyncapi.yaml, docs/openapi.json, "
        "docs/schemas/<routing-key>.json and docs/examples/<routing-key>.json. Run it from the project "
        "root after changing a contract; the contract tests fail while these files are out of date.",
        """\
  uv run contacts docs
  uv run contacts docs --check
""",
    )
    docs.add_argument("--out", default="docs", metavar="DIR", help="where to write (default: docs)")
    docs.add_argument("--check", action="store_true", help="write nothing; exit 1 naming the files out of date")
    docs.set_defaults(run=run_docs)

    demo_cmd = _subcommand(
        commands,
        "demo",
        "publish the demo accounts, services, invoice and payment methods",
        "Publish a small world, as the other systems would: five accounts (four in EU, one in CA), a "
        "hosting plan, a domain and a VPS, an unpaid invoice (dd44444-ovh) and payment methods "
        "(aa11111-ovh, bb22222-ovh). Publishing it again is harmless. The story: aa11111-ovh, admin of "
        "shop-example.web-hosting and shop-example.com, makes her webmaster bb22222-ovh their "
        "technical contact instead of cc33333-ovh.",
        """\
  contacts demo
  CONTACTS_NAMESPACE=mytest_ contacts demo
""",
    )
    demo_cmd.set_defaults(run=run_demo)

    dev = _subcommand(
        commands,
        "dev",
        "run the three services and a mail sink in this terminal",
        "Run contacts-requests, contacts-billing-check and contacts-notifier against the PostgreSQL and "
        "RabbitMQ of the CONTACTS_* settings (default: local), with their output prefixed by their "
        "name, and a mail sink that receives the notifier's mail. Sets a development "
        "CONTACTS_JWT_SECRET when none is set. Ctrl-C stops everything; if a service dies, everything "
        "stops and the exit status is 1.",
        """\
  contacts dev
  contacts dev --demo
  CONTACTS_HTTP_PORT=8080 contacts dev --inbox-port 8026
""",
    )
    dev.add_argument("--demo", action="store_true", help="publish the demo data once the services are up")
    dev.add_argument("--smtp-port", type=port, default=1025, help="mail sink SMTP port (default 1025)")
    dev.add_argument("--inbox-port", type=port, default=8025, help="mail sink web inbox port (default 8025)")
    dev.add_argument(
        "--ready-timeout",
        type=positive_int,
        default=60,
        metavar="SECONDS",
        help="how long to wait for the services to be up (default 60)",
    )
    dev.set_defaults(run=run_dev)

    sink = _subcommand(
        commands,
        "mailsink",
        "run only the mail sink (SMTP and web inbox)",
        "Accept every mail over SMTP and show it in a web inbox (newest first), with a JSON API: "
        "GET /api/messages[?to=ADDRESS], GET /api/messages/ID, DELETE /api/messages. Nothing is relayed.",
        """\
  contacts mailsink
  contacts mailsink --smtp-port 2525 --http-port 8026
""",
    )
    sink.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sink.add_argument("--smtp-port", type=port, default=1025, help="SMTP port (default 1025)")
    sink.add_argument("--http-port", type=port, default=8025, help="web inbox port (default 8025)")
    sink.set_defaults(run=run_mailsink)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
    except CliError as exc:
        print(f"{PROGRAM} {args.command}: {exc}", file=sys.stderr)
        status = exc.status
    except KeyboardInterrupt:
        status = 130
    raise SystemExit(status)


if __name__ == "__main__":
    main()

"""`contacts`: the developer's command line: publish messages as other systems do, mint tokens,
load demo data, run the whole system in one terminal (`dev_session`), or just the mail sink.
What the commands share is in `commands`.

Every failure ends with one line on stderr naming what is wrong: exit status 2 for bad input
or settings, 1 for a failure at run time (RabbitMQ unreachable, a service that died...).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from contacts_shared.auth import ROLES_CLAIM, SUPPORT_ROLE, mint_token
from contacts_shared.contracts import MESSAGE_TYPES, Contract, Envelope
from contacts_shared.settings import DEV_JWT_SECRET
from contacts_tools import bus_access, demo, translations
from contacts_tools.commands import (
    PROGRAM,
    CliError,
    common_settings,
    parse_message_data,
    publish_all,
)
from contacts_tools.dev_session import run_dev

# The broker client and the SMTP server are imported by the commands that use them: that halves
# the start-up time of `contacts --help` and `contacts token`.


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
    from contacts_tools import contract_docs

    docs_dir = Path(args.out)
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
        roles_claim = os.environ.get("CONTACTS_JWT_ROLES_CLAIM") or ROLES_CLAIM
        print(mint_token(secret, args.nic, args.ttl, roles=args.role, roles_claim=roles_claim))
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
    from contacts_tools import mailsink

    return mailsink.run_until_interrupted(args.host, args.smtp_port, args.http_port)


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
  contacts token zz99999-ovh --role support     # a support agent's, for /v1/support/... and /support
""",
    )
    token.add_argument("nic", metavar="NIC", help="the account's NIC handle, e.g. aa11111-ovh")
    token.add_argument("--ttl", type=positive_int, default=3600, metavar="SECONDS", help="lifetime (default 3600)")
    token.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="ROLE",
        help=f"a role in the token's roles claim (CONTACTS_JWT_ROLES_CLAIM, default {ROLES_CLAIM}); "
        f"`{SUPPORT_ROLE}` makes a support agent; may be repeated",
    )
    token.set_defaults(run=run_token)

    bus_access.add_command(commands)
    translations.add_command(commands)

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

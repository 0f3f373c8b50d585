"""Who may do what on the bus, enforced by RabbitMQ itself: one user per service and one for
the other systems, each with permissions on the namespace's exchange and its own queues only,
and topic permissions so that each routing key can be written only by its owner. Without them
any program allowed on the exchange could publish `contact_change.vetted approved=true` and skip
the billing check.

Two ways to give them to a broker, from the same table: `contacts bus-definitions` writes them
as RabbitMQ definitions, which a node loads at every start (the compose files mount them), and
`contacts bus-users` applies them to a running broker through its management API.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

# The routing keys each user may publish on the exchange (RabbitMQ's topic permissions).
WRITES = {
    "other-systems": ("account.*", "service.*", "invoice.*", "payment_method.*", "contact_change.submit", "contact_change.submit_batch"),
    "billing-check": ("contact_change.vetted",),
    "notifier": ("contact_change.token_issued", "contact_change.email_failed"),
    "requests": (
        "contact_change.requested",
        "contact_change.validation_requested",
        "contact_change.batch_validation_requested",
        "contact_change.state_changed",
        # Also routed by its state (BCC), which RabbitMQ 4 checks against these permissions too.
        "contact_change.state_changed.*",
        "contact_change.completed",
        "contact_change.support_acted",
    ),
}
SERVICES = ("requests", "billing-check", "notifier")
USERS = (*SERVICES, "other-systems")


@dataclass(frozen=True)
class Permissions:
    """A user's RabbitMQ permissions in the namespace: resource regexes and routing-key regex."""

    configure: str
    write: str
    read: str
    topic_write: str


def _key_pattern(keys: tuple[str, ...]) -> str:
    """Routing keys with `*` for one word, as one anchored regex."""
    return "^(" + "|".join(re.escape(k).replace(r"\*", r"[^.]+") for k in keys) + ")$"


def permissions(namespace: str, user: str) -> Permissions:
    exchange = re.escape(f"{namespace}contacts")
    topic_write = _key_pattern(WRITES[user])
    if user == "other-systems":
        # Publish on the exchange and nothing else: no queue of their own, no declaring.
        return Permissions(configure="^$", write=f"^{exchange}$", read="^$", topic_write=topic_write)
    # Its queue, its retry and dead-letter queues (`{ns}billing_check`, `.retry`, `.dlq`); the
    # default exchange carries its retries and dead letters to them.
    own = re.escape(f"{namespace}{user.replace('-', '_')}") + r"(\..+)?"
    return Permissions(
        configure=f"^({exchange}|{own})$",
        write=f"^({exchange}|{own}|amq\\.default)$",
        read=f"^({exchange}|{own})$",
        topic_write=topic_write,
    )


def topic_permission(namespace: str, user: str) -> dict[str, str]:
    """The user's topic permission on the namespace's exchange: what it may publish; reads free."""
    return {"exchange": f"{namespace}contacts", "write": permissions(namespace, user).topic_write, "read": ".*"}


def user_name(namespace: str, user: str) -> str:
    """The RabbitMQ user of `user` in a namespace (`contacts-requests`, `t1234_contacts-notifier`)."""
    return f"{namespace}contacts-{user}"


async def apply(management_url: str, admin: tuple[str, str], vhost: str, namespace: str, passwords: dict[str, str]) -> list[str]:
    """Create or update each user of `passwords` (keys from USERS) with its permissions, through
    the management API; returns the user names."""
    done = []
    async with httpx.AsyncClient(base_url=management_url.rstrip("/"), auth=admin, timeout=15) as api:
        await _until_it_answers(api)
        for user, password in passwords.items():
            name = quote(user_name(namespace, user), safe="")
            granted = permissions(namespace, user)
            where = f"{quote(vhost, safe='')}/{name}"
            for path, body in (
                (f"/api/users/{name}", {"password": password, "tags": ""}),
                (f"/api/permissions/{where}", {"configure": granted.configure, "write": granted.write, "read": granted.read}),
                (f"/api/topic-permissions/{where}", topic_permission(namespace, user)),
            ):
                response = await api.put(path, json=body)
                if response.status_code not in (201, 204):
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
            done.append(user_name(namespace, user))
    return done


async def _until_it_answers(api: httpx.AsyncClient, seconds: float = 60) -> None:
    """The management API may come up a little after the broker's port (compose starts this job
    once RabbitMQ is healthy): wait for it, up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            response = await api.get("/api/overview")
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
            continue
        response.raise_for_status()  # wrong admin credentials: no use waiting
        return


async def remove(management_url: str, admin: tuple[str, str], namespace: str) -> None:
    """Delete the namespace's users (the tests' clean-up)."""
    async with httpx.AsyncClient(base_url=management_url.rstrip("/"), auth=admin, timeout=15) as api:
        for user in USERS:
            await api.delete(f"/api/users/{quote(user_name(namespace, user), safe='')}")


# --- RabbitMQ definitions ------------------------------------------------------------------------

HASHING = "rabbit_password_hashing_sha256"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """A password as RabbitMQ stores it (its `rabbit_password_hashing_sha256`): base64 of a
    4-byte salt followed by SHA-256(salt + password), so that the definitions hold no password."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def hash_matches(stored: str, password: str) -> bool:
    return password_hash(password, base64.b64decode(stored)[:4]) == stored


def definitions(namespace: str, vhost: str, passwords: dict[str, str], admin: tuple[str, str]) -> dict:
    """RabbitMQ definitions of the vhost, the administrator and each user of `passwords` with its
    permissions. A node that loads definitions at start makes no default (guest) user, so the
    administrator, who signs in to the management console, is in them too."""
    users = [{"name": admin[0], "password_hash": password_hash(admin[1]), "hashing_algorithm": HASHING, "tags": ["administrator"]}]
    granted = [{"user": admin[0], "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}]
    topics = []
    for user, password in passwords.items():
        name, rights = user_name(namespace, user), permissions(namespace, user)
        users.append({"name": name, "password_hash": password_hash(password), "hashing_algorithm": HASHING, "tags": []})
        granted.append({"user": name, "vhost": vhost, "configure": rights.configure, "write": rights.write, "read": rights.read})
        topics.append({"user": name, "vhost": vhost, **topic_permission(namespace, user)})
    return {"users": users, "vhosts": [{"name": vhost}], "permissions": granted, "topic_permissions": topics}


# --- contacts bus-users, contacts bus-definitions ---------------------------------------------------

PASSWORD_VARIABLE = "CONTACTS_BUS_PASSWORD_{}"  # …_REQUESTS, _BILLING_CHECK, _NOTIFIER, _OTHER_SYSTEMS


def password_variable(user: str) -> str:
    return PASSWORD_VARIABLE.format(user.upper().replace("-", "_"))


def _passwords(command: str, every: bool) -> dict[str, str] | None:
    """The users' passwords from the environment (all of them when `every`); None, after saying
    which variables to set, when there are none (or some are missing)."""
    passwords = {user: os.environ[password_variable(user)] for user in USERS if os.environ.get(password_variable(user))}
    missing = [password_variable(u) for u in USERS if u not in passwords]
    if not passwords or (every and missing):
        wanted = missing if every else [password_variable(u) for u in USERS]
        print(f"contacts {command}: set {'each' if every else 'at least one'} of {', '.join(wanted)}", file=sys.stderr)
        return None
    return passwords


def run_bus_users(args: argparse.Namespace) -> int:
    """Apply the users whose password is set in the environment; say which ones."""
    passwords = _passwords("bus-users", every=False)
    if passwords is None:
        return 2
    admin = (os.environ.get("RABBITMQ_ADMIN_USER", "guest"), os.environ.get("RABBITMQ_ADMIN_PASSWORD", "guest"))
    namespace = os.environ.get("CONTACTS_NAMESPACE", "")
    for name in asyncio.run(apply(args.management_url, admin, args.vhost, namespace, passwords)):
        print(f"{name}: permissions and topic permissions set")
    return 0


def run_bus_definitions(args: argparse.Namespace) -> int:
    """Write the definitions of every user, the administrator included, to `args.out`."""
    passwords = _passwords("bus-definitions", every=True)
    admin = (os.environ.get("RABBITMQ_ADMIN_USER", ""), os.environ.get("RABBITMQ_ADMIN_PASSWORD", ""))
    if not all(admin):
        print("contacts bus-definitions: set RABBITMQ_ADMIN_USER and RABBITMQ_ADMIN_PASSWORD (the console's administrator)", file=sys.stderr)
        return 2
    if passwords is None:
        return 2
    text = json.dumps(definitions(os.environ.get("CONTACTS_NAMESPACE", ""), args.vhost, passwords, admin), indent=2) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"{args.out}: {len(passwords) + 1} users, their permissions and topic permissions", file=sys.stderr)
    return 0


def _command(commands: argparse._SubParsersAction, name: str, run: object, **texts: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **texts)
    command.add_argument("--vhost", default="/", help="default /")
    command.set_defaults(run=run)
    return command


def add_command(commands: argparse._SubParsersAction) -> None:
    users = _command(
        commands,
        "bus-users",
        run_bus_users,
        help="create the services' and other systems' RabbitMQ users, each allowed only its own routing keys",
        description="Create or update, through RabbitMQ's management API, one user per service and one for other "
        "systems, each with permissions on the namespace's exchange and its own queues only and topic permissions "
        "naming the routing keys it may publish (docs/security.md). A user is set up when its password is in the "
        "environment: " + ", ".join(password_variable(u) for u in USERS) + ". The management API is used as "
        "RABBITMQ_ADMIN_USER / RABBITMQ_ADMIN_PASSWORD (default guest/guest); names get CONTACTS_NAMESPACE as prefix.",
        epilog="example:\n  CONTACTS_BUS_PASSWORD_REQUESTS=… CONTACTS_BUS_PASSWORD_OTHER_SYSTEMS=… contacts bus-users",
    )
    users.add_argument("--management-url", default="http://127.0.0.1:15672", help="default http://127.0.0.1:15672")
    definitions = _command(
        commands,
        "bus-definitions",
        run_bus_definitions,
        help="write the same RabbitMQ users and permissions as definitions a node loads at start",
        description="Write RabbitMQ definitions (users with salted password hashes, permissions, topic "
        "permissions) for the administrator (RABBITMQ_ADMIN_USER / RABBITMQ_ADMIN_PASSWORD), one user per "
        "service and one for other systems, as `contacts bus-users` makes them. Every password must be in the "
        "environment: " + ", ".join(password_variable(u) for u in USERS) + ". A node configured with "
        "`definitions.local.path` (deploy/rabbitmq/20-contacts.conf) loads them at every start and then makes "
        "no guest user. The file holds no password, but keep it private: hashes can be attacked offline.",
        epilog="example:\n  RABBITMQ_ADMIN_USER=admin RABBITMQ_ADMIN_PASSWORD=… CONTACTS_BUS_PASSWORD_REQUESTS=… … \\\n"
        "    contacts bus-definitions --out /srv/contacts/rabbitmq-definitions.json",
    )
    definitions.add_argument("--out", default="-", help="the file to write (default -, standard output)")

"""Who may do what on the bus, enforced by RabbitMQ itself: one user per service and one for
the other systems, each with permissions on the namespace's exchange and its own queues only,
and topic permissions so that each routing key can be written only by its owner. Without them
any program allowed on the exchange could publish `contact_change.vetted approved=true` and skip
the billing check.

`contacts bus-users` applies these users and permissions to a broker through its management
API (the compose file runs it once RabbitMQ is up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

# The routing keys each user may publish on the exchange (RabbitMQ's topic permissions).
WRITES = {
    "other-systems": ("account.*", "service.*", "invoice.*", "payment_method.*", "contact_change.submit"),
    "billing-check": ("contact_change.vetted",),
    "notifier": ("contact_change.token_issued", "contact_change.email_failed"),
    "requests": (
        "contact_change.requested",
        "contact_change.validation_requested",
        "contact_change.state_changed",
        "contact_change.completed",
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
                (f"/api/topic-permissions/{where}", {"exchange": f"{namespace}contacts", "write": granted.topic_write, "read": ".*"}),
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


# --- contacts bus-users ---------------------------------------------------------------------------

PASSWORD_VARIABLE = "CONTACTS_BUS_PASSWORD_{}"  # …_REQUESTS, _BILLING_CHECK, _NOTIFIER, _OTHER_SYSTEMS


def password_variable(user: str) -> str:
    return PASSWORD_VARIABLE.format(user.upper().replace("-", "_"))


def run_bus_users(args: argparse.Namespace) -> int:
    """Apply the users whose password is set in the environment; say which ones."""
    passwords = {user: os.environ[password_variable(user)] for user in USERS if os.environ.get(password_variable(user))}
    if not passwords:
        raise SystemExit(f"contacts bus-users: set at least one of {', '.join(password_variable(u) for u in USERS)}")
    admin = (os.environ.get("RABBITMQ_ADMIN_USER", "guest"), os.environ.get("RABBITMQ_ADMIN_PASSWORD", "guest"))
    namespace = os.environ.get("CONTACTS_NAMESPACE", "")
    for name in asyncio.run(apply(args.management_url, admin, args.vhost, namespace, passwords)):
        print(f"{name}: permissions and topic permissions set")
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "bus-users",
        help="create the services' and other systems' RabbitMQ users, each allowed only its own routing keys",
        description="Create or update, through RabbitMQ's management API, one user per service and one for other "
        "systems, each with permissions on the namespace's exchange and its own queues only and topic permissions "
        "naming the routing keys it may publish (docs/security.md). A user is set up when its password is in the "
        "environment: " + ", ".join(password_variable(u) for u in USERS) + ". The management API is used as "
        "RABBITMQ_ADMIN_USER / RABBITMQ_ADMIN_PASSWORD (default guest/guest); names get CONTACTS_NAMESPACE as prefix.",
        epilog="example:\n  CONTACTS_BUS_PASSWORD_REQUESTS=… CONTACTS_BUS_PASSWORD_OTHER_SYSTEMS=… contacts bus-users",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("--management-url", default="http://127.0.0.1:15672", help="default http://127.0.0.1:15672")
    command.add_argument("--vhost", default="/", help="default /")
    command.set_defaults(run=run_bus_users)

"""How a service declares what it consumes: one `Subscription` per message type, as plain data.

A subscription names the contract (hence the routing key), the handler, how it runs and, for a
type of which only some messages call for anything, which ones. Retrying, dead-lettering,
metrics and logging are not the handler's business: the consumer's steps wrap every handler
alike (`contacts_shared.consumer`).

A handler is `async def handle(conn, envelope, data: TheContract, *, <dependency>...)`: what it
needs beyond the message (a setting, say) is a keyword-only parameter, given by name from the
dependencies the service passes at start (`ServiceBus.handle_all`), so the table itself needs
no settings to be built.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property, partial
from typing import Any

import asyncpg
import structlog

from contacts_shared.contracts import ROUTING_KEYS, Contract, Envelope

HandlerFunction = Callable[..., Awaitable[Any]]

log = structlog.get_logger("contacts.replicas")


class Runs(StrEnum):
    """How a handler's effects are made exactly once."""

    # The consumer opens a transaction, claims the message in the inbox, then calls the handler.
    in_transaction = "in_transaction"
    # The handler's whole effect is one statement that also claims the message in the inbox
    # (`db.claim_cte`, `outbox.claim_and_enqueue`): it commits as a whole, so it runs without
    # BEGIN and COMMIT around it, two round trips less. Reads it needs run alone before it.
    # It returns whether the message was fresh.
    claims_itself = "claims_itself"


@dataclass(frozen=True)
class Subscription:
    """One message type a service consumes, and what it does with it."""

    contract: type[Contract]
    handle: HandlerFunction
    runs: Runs = Runs.in_transaction
    # A pure test of the data: a message it says no to is acked without a transaction or an
    # inbox row, having no effect to apply exactly once (the notifier hears of every state a
    # request goes through and mails for a few).
    concerns: Callable[[Any], bool] | None = None

    @property
    def routing_key(self) -> str:
        return ROUTING_KEYS[self.contract]

    @cached_property
    def dependencies(self) -> frozenset[str]:
        """The names of the keyword-only parameters the handler needs given."""
        parameters = inspect.signature(self.handle).parameters.values()
        return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)

    def bound(self, dependencies: Mapping[str, Any]) -> Callable[[asyncpg.Connection, Envelope, Any], Awaitable[Any]]:
        """The handler with what it needs of `dependencies`; refused at start if one is missing."""
        missing = self.dependencies - dependencies.keys()
        if missing:
            raise TypeError(f"the {self.routing_key} handler needs {', '.join(sorted(missing))}")
        return partial(self.handle, **{name: dependencies[name] for name in self.dependencies})

    async def __call__(self, conn: asyncpg.Connection, envelope: Envelope, data: Any, **dependencies: Any) -> Any:
        """Run the handler once, as tests do (the consumer binds it once at start)."""
        return await self.bound(dependencies)(conn, envelope, data)


def on(
    contract: type[Contract],
    handle: HandlerFunction,
    *,
    claims_itself: bool = False,
    concerns: Callable[[Any], bool] | None = None,
) -> Subscription:
    """Declare `handle` for the messages of `contract`."""
    return Subscription(contract, handle, Runs.claims_itself if claims_itself else Runs.in_transaction, concerns)


def by_routing_key(subscriptions: Iterable[Subscription]) -> dict[str, Subscription]:
    """The table keyed by routing key; a type declared twice is a mistake caught at start."""
    table: dict[str, Subscription] = {}
    for subscription in subscriptions:
        if subscription.routing_key in table:
            raise ValueError(f"{subscription.routing_key} is handled twice")
        table[subscription.routing_key] = subscription
    return table


def ignored_as_stale(envelope: Envelope, **key: str) -> None:
    """Say that a replica's message was older than what the row holds, hence ignored: replicas
    follow the messages' `occurred_at`, not their arrival. `key` names the row."""
    log.info("older than the replica, ignored", type=envelope.type, occurred_at=envelope.occurred_at.isoformat(), **key)

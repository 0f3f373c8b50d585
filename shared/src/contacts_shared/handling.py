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

import contextlib
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property, partial
from typing import Any

import asyncpg
import structlog

from contacts_shared.contracts import ROUTING_KEYS, Contract, Envelope
from contacts_shared.statement import Statement

HandlerFunction = Callable[..., Awaitable[Any]]

log = structlog.get_logger("contacts.replicas")


class Runs(StrEnum):
    """How a handler's effects are made exactly once."""

    # The consumer opens a transaction, claims the message in the inbox, then calls the handler.
    in_transaction = "in_transaction"
    # The handler's whole effect is one statement that also claims the message in the inbox
    # (`db.claim_cte`, `statement.Statement.claim`): it commits as a whole, so it runs without
    # BEGIN and COMMIT around it, two round trips less. Reads it needs run alone before it.
    # It returns whether the message was fresh.
    claims_itself = "claims_itself"
    # The consumer opens a transaction and the handler's unit of work claims the message in the
    # statement that saves its effects (`take_pending_claim`), a round trip less; if nothing
    # took the claim, the consumer makes it after the handler. A message claimed before is
    # `AlreadyClaimed`: the transaction is rolled back, effects and all.
    claimed_on_save = "claimed_on_save"
    # The handler writes nothing and only answers (`ServiceBus.reply`) under an id derived from
    # the message's: answering a redelivery again publishes the same message, which the inbox
    # of the service answered takes once. Nothing is claimed, no transaction opened.
    answers_only = "answers_only"


class AlreadyClaimed(Exception):
    """The message being handled was claimed before (a duplicate): its transaction rolls back."""


@dataclass
class PendingClaim:
    """The claim of the message being handled on `conn`, until a statement takes it."""

    conn: asyncpg.Connection
    message_id: uuid.UUID
    routing_key: str
    taken: bool = False


_PENDING_CLAIM: ContextVar[PendingClaim | None] = ContextVar("contacts_pending_claim", default=None)


@contextlib.contextmanager
def claim_pending(conn: asyncpg.Connection, message_id: uuid.UUID, routing_key: str) -> Iterator[PendingClaim]:
    """While a `Runs.claimed_on_save` handler runs: its claim, for the first statement that saves."""
    pending = PendingClaim(conn, message_id, routing_key)
    reset = _PENDING_CLAIM.set(pending)
    try:
        yield pending
    finally:
        _PENDING_CLAIM.reset(reset)


def take_pending_claim(conn: asyncpg.Connection, statement: Statement) -> PendingClaim | None:
    """Put the pending claim of the message handled on `conn`, if there is one, in `statement`."""
    pending = _PENDING_CLAIM.get()
    if pending is None or pending.conn is not conn or pending.taken:
        return None
    statement.claim(pending.message_id, pending.routing_key)
    pending.taken = True
    return pending


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
    # The keys its queue is bound by, when narrower than its type: a state change is also routed
    # by its state (`contracts.also_routed_by`), and the notifier binds the states it mails on.
    bound_by: tuple[str, ...] = ()

    @property
    def routing_key(self) -> str:
        return ROUTING_KEYS[self.contract]

    @property
    def binding_keys(self) -> tuple[str, ...]:
        """The keys the service's queue is bound by to get these messages."""
        return self.bound_by or (self.routing_key,)

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
    runs: Runs = Runs.in_transaction,
    *,
    concerns: Callable[[Any], bool] | None = None,
    bound_by: Iterable[str] = (),
) -> Subscription:
    """Declare `handle` for the messages of `contract`, run as `runs` says, bound by its routing
    key, or by the narrower keys `bound_by`."""
    return Subscription(contract, handle, runs, concerns, tuple(bound_by))


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

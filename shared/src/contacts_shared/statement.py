"""Writes gathered into one statement: each a data-modifying WITH item, sent in one round trip.

A unit of work saves what the domain decided (a state, a history line, an answer, a replica)
and the messages announcing it; sent one statement each, that is a round trip per write, the
largest part of a service's CPU (bench/README.md). Gathered here, they go as one:

    WITH claimed AS (INSERT INTO inbox ...),          -- the message handled, if any (claims)
         w1 AS (UPDATE contact_changes SET ...),      -- the writes, in the order added
         w2 AS (INSERT INTO outbox ...)               -- the messages (outbox.queue_in)
    SELECT EXISTS (SELECT 1 FROM claimed) FROM pg_notify(...)

All of it commits or fails as one statement. Two rules come with it (PostgreSQL's): every item
sees the database as it was before the statement, so nothing added may read what another
writes; and a row may be modified by one item only, so the updates of one row (`update`) are
merged into one UPDATE.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from contacts_shared.db import claim_cte


@dataclass(frozen=True)
class Sql:
    """A value given as an SQL expression over the row's own columns (`now()`, `failures + 1`),
    never from input."""

    expression: str


NOW = Sql("now()")

_PARAMETER = re.compile(r"\$(\d+)")


@dataclass
class Statement:
    """Writes to run as one statement (`run`), in the caller's transaction or as one of its own."""

    _items: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    # (table, key columns and values) -> columns and values, in the order first set.
    _updates: dict[tuple[str, tuple[tuple[str, Any], ...]], dict[str, Any]] = field(default_factory=dict)
    _claim: tuple[uuid.UUID, str] | None = None
    wake: str | None = None  # an SQL expression naming the channel to NOTIFY at commit (outbox.queue_in)

    def add(self, sql: str, *args: Any) -> Statement:
        """One INSERT or UPDATE (without a WITH of its own), its parameters numbered from $1."""
        self._items.append((sql, args))
        return self

    def update(self, table: str, key: dict[str, Any], **values: Any) -> Statement:
        """Set columns of the row of `table` whose `key` columns hold these values; several
        updates of one row become one UPDATE (a later value of a column wins). `table` and the
        column names are ours, never input."""
        self._updates.setdefault((table, tuple(key.items())), {}).update(values)
        return self

    def claim(self, message_id: uuid.UUID, routing_key: str) -> Statement:
        """Record the message handled in the inbox, in this statement: `run` says if it was fresh."""
        self._claim = (message_id, routing_key)
        return self

    @property
    def empty(self) -> bool:
        return not (self._items or self._updates or self._claim or self.wake)

    async def run(self, conn: asyncpg.Connection) -> bool:
        """Run it; False if the message claimed was claimed before (its writes are done all the
        same: a caller claiming in a transaction rolls it back). Then it is empty again."""
        if self.empty:
            return True
        items, args = [], []
        if self._claim is not None:
            args.extend(self._claim)
            items.append(claim_cte("$1", "$2"))
        for sql, values in [*self._items, *(_update_sql(table, key, columns) for (table, key), columns in self._updates.items())]:
            items.append(f"w{len(items)} AS ({_renumbered(sql, len(args))})")
            args.extend(values)
        fresh = "EXISTS (SELECT 1 FROM claimed)" if self._claim is not None else "true"
        notify = f" FROM pg_notify({self.wake}, '')" if self.wake else ""
        result = await conn.fetchval(f"WITH {', '.join(items)} SELECT {fresh}{notify}", *args)
        self._items.clear()
        self._updates.clear()
        self._claim = None
        self.wake = None
        return bool(result)


def _renumbered(sql: str, offset: int) -> str:
    """`sql` with its parameters $1, $2... moved to follow `offset` others."""
    return _PARAMETER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


def _update_sql(table: str, key: tuple[tuple[str, Any], ...], columns: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    args: list[Any] = []

    def value(v: Any) -> str:
        if isinstance(v, Sql):
            return v.expression
        args.append(v)
        return f"${len(args)}"

    assignments = ", ".join(f"{column} = {value(v)}" for column, v in columns.items())
    where = " AND ".join(f"{column} = {value(v)}" for column, v in key)
    return f"UPDATE {table} SET {assignments} WHERE {where}", tuple(args)

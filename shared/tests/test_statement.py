"""Writes gathered into one statement, against the real PostgreSQL: each item keeps its own
parameters, two updates of one row become one UPDATE that sets both, and a claim says whether
the message was fresh."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from contacts_shared.statement import NOW, Sql, Statement
from contacts_tools.testing import schema_pool

TABLE = """
CREATE TABLE things (id int PRIMARY KEY, name text, count int NOT NULL DEFAULT 0, seen_at timestamptz);
CREATE TABLE notes (id bigserial PRIMARY KEY, thing int NOT NULL, note text NOT NULL);
"""


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("statement", [TABLE]) as pool:
        yield pool


async def test_items_keep_their_own_parameters_and_run_as_one_statement(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        statement = Statement().add("INSERT INTO things (id, name) VALUES ($1, $2)", 1, "one")
        statement.add("INSERT INTO things (id, name) VALUES ($1, $2)", 2, "two")
        statement.add("INSERT INTO notes (thing, note) VALUES ($1, $2)", 2, "second")
        assert await statement.run(conn) is True
        assert statement.empty
        assert [tuple(r) for r in await conn.fetch("SELECT id, name FROM things ORDER BY id")] == [(1, "one"), (2, "two")]
        assert await conn.fetchval("SELECT note FROM notes WHERE thing = 2") == "second"


async def test_two_updates_of_a_row_are_one_update_that_sets_both(pool: asyncpg.Pool) -> None:
    await pool.execute("INSERT INTO things (id, name) VALUES (1, 'one')")
    async with pool.acquire() as conn:
        statement = Statement().update("things", {"id": 1}, name="first", count=Sql("count + 5"))
        statement.update("things", {"id": 1}, seen_at=NOW, name="uno")  # a later value wins
        await statement.run(conn)
        row = await conn.fetchrow("SELECT name, count, seen_at IS NOT NULL AS seen FROM things WHERE id = 1")
    assert tuple(row) == ("uno", 5, True)


async def test_a_claim_says_whether_the_message_was_fresh(pool: asyncpg.Pool) -> None:
    message_id = uuid.uuid4()
    async with pool.acquire() as conn:
        assert await Statement().claim(message_id, "thing.made").add("INSERT INTO notes (thing, note) VALUES ($1, 'x')", 1).run(conn)
        again = Statement().claim(message_id, "thing.made").add("INSERT INTO notes (thing, note) VALUES ($1, 'x')", 1)
        assert await again.run(conn) is False
        assert await conn.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", message_id) == 1

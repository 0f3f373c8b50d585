"""Least privilege in the database (spec section 9): the SQL that deploy/postgres/init-roles.sh
runs for each service, run here against the test PostgreSQL under test-only role and schema
names. Each role runs its service's own migrations, and the notifier's role cannot read the
requests schema (nor create a schema of its own).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from contacts_notifier.store import MIGRATIONS as NOTIFIER_MIGRATIONS
from contacts_requests.schema import MIGRATIONS as REQUESTS_MIGRATIONS
from contacts_shared.db import migrate

ROLE_SQL = Path(__file__).resolve().parents[2] / "deploy/postgres/service-role.psql"


def render_psql(sql: str, variables: dict[str, str]) -> str:
    """psql's variable interpolation: :"name" is a quoted identifier, :'name' a quoted literal."""
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    sql = re.sub(r':"(\w+)"', lambda m: '"' + variables[m.group(1)].replace('"', '""') + '"', sql)
    return re.sub(r":'(\w+)'", lambda m: "'" + variables[m.group(1)].replace("'", "''") + "'", sql)


def as_role(database_url: str, role: str, password: str) -> str:
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


@pytest.fixture
async def service_roles(infrastructure: tuple[str, str]) -> AsyncIterator[dict[str, tuple[str, str]]]:
    """{service: (database URL as its role, its schema)} for requests and notifier."""
    database_url, _ = infrastructure
    namespace = f"t{uuid.uuid4().hex[:10]}_"
    admin = await asyncpg.connect(database_url)
    database = await admin.fetchval("SELECT current_database()")
    made: dict[str, tuple[str, str, str]] = {}
    try:
        for service in ("requests", "notifier"):
            role, schema, password = f"{namespace}contacts_{service}", f"{namespace}{service}", uuid.uuid4().hex
            await admin.execute(
                render_psql(
                    ROLE_SQL.read_text(),
                    {"role": role, "schema": schema, "password": password, "database": database},
                )
            )
            made[service] = (role, schema, password)
        yield {s: (as_role(database_url, role, password), schema) for s, (role, schema, password) in made.items()}
    finally:
        for role, schema, _ in made.values():
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await admin.execute(f'DROP OWNED BY "{role}"')  # its CONNECT grant
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_each_role_migrates_its_schema_and_the_notifier_cannot_read_requests(
    service_roles: dict[str, tuple[str, str]],
) -> None:
    requests_url, requests_schema = service_roles["requests"]
    notifier_url, notifier_schema = service_roles["notifier"]

    # Each service, connected as its own role, runs its migrations (twice: replicas restart).
    assert await migrate(requests_url, requests_schema, REQUESTS_MIGRATIONS) == len(REQUESTS_MIGRATIONS) + 1
    assert await migrate(notifier_url, notifier_schema, NOTIFIER_MIGRATIONS) == len(NOTIFIER_MIGRATIONS) + 1
    assert await migrate(notifier_url, notifier_schema, NOTIFIER_MIGRATIONS) == 0

    notifier = await asyncpg.connect(notifier_url)
    try:
        assert await notifier.fetchval("SELECT current_user") == f"{notifier_schema.removesuffix('notifier')}contacts_notifier"
        # Its own schema: full use.
        await notifier.execute(f'INSERT INTO "{notifier_schema}".inbox (message_id, routing_key) VALUES ($1, $2)', uuid.uuid4(), "x")
        # The requests schema: permission denied, for reading and for writing.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for schema"):
            await notifier.fetch(f'SELECT * FROM "{requests_schema}".contact_changes')
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await notifier.execute(f'DELETE FROM "{requests_schema}".outbox')
        # Nor may it make itself another schema.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
            await notifier.execute(f'CREATE SCHEMA "{notifier_schema}_more"')
    finally:
        await notifier.close()

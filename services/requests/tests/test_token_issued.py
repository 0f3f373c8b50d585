"""`contact_change.token_issued`: its one statement (claim and UPDATE) keeps only the newest token of a pending
confirmer, so that a late message (or one delivered again with a new message id, which the
inbox would not catch) never revives a spent token or replaces a newer one. Real PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from contacts_requests import store
from contacts_requests.handlers import on_token_issued
from contacts_shared.contracts import (
    ContactChangeTokenIssued,
    ContactType,
    RequestState,
    envelope_for,
)
from contacts_shared.testing import schema_pool

OWNER, WEBMASTER = "aa11111-ovh", "bb22222-ovh"


def h(name: str) -> str:
    """A token hash (sha256 hex) named for the test."""
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture
async def conn() -> AsyncIterator[asyncpg.Connection]:
    async with schema_pool("requests", store.MIGRATIONS) as pool, pool.acquire() as conn:
        yield conn


async def _validating_request(conn: asyncpg.Connection) -> uuid.UUID:
    request_id = uuid.uuid4()
    await store.insert_request(
        conn, request_id=request_id, service="shop-example.web-hosting", ctype=ContactType.tech, from_="cc33333-ovh",
        to=WEBMASTER, requester=OWNER, confirmers=(OWNER, WEBMASTER), expires_at=datetime.now(UTC) + timedelta(days=7),
    )
    await store.set_state(conn, request_id, RequestState.validating, "system", "vetted")
    return request_id


async def _deliver(conn: asyncpg.Connection, request_id: uuid.UUID, nic: str, token_hash: str, at: datetime) -> None:
    data = ContactChangeTokenIssued(request_id=request_id, nic=nic, token_hash=token_hash, expires_at=at + timedelta(days=1))
    envelope = envelope_for(data).model_copy(update={"occurred_at": at})
    await on_token_issued(conn, envelope, data)


async def _hash_of(conn: asyncpg.Connection, request_id: uuid.UUID, nic: str) -> str | None:
    return await conn.fetchval("SELECT token_hash FROM confirmers WHERE request_id = $1 AND nic = $2", request_id, nic)


async def test_again_after_the_answer_does_not_revive_the_spent_token(conn: asyncpg.Connection) -> None:
    request_id = await _validating_request(conn)
    issued_at = datetime.now(UTC)
    await _deliver(conn, request_id, WEBMASTER, h("hash-1"), issued_at)
    assert await _hash_of(conn, request_id, WEBMASTER) == h("hash-1")
    await store.record_answer(conn, request_id, WEBMASTER, "accepted", RequestState.validating, "accepted")

    await _deliver(conn, request_id, WEBMASTER, h("hash-1"), issued_at)

    assert await _hash_of(conn, request_id, WEBMASTER) is None


async def test_a_late_older_token_does_not_replace_the_newer_one(conn: asyncpg.Connection) -> None:
    request_id = await _validating_request(conn)
    now = datetime.now(UTC)
    await _deliver(conn, request_id, OWNER, h("newer"), now)

    await _deliver(conn, request_id, OWNER, h("older"), now - timedelta(minutes=5))
    await _deliver(conn, request_id, OWNER, h("newer"), now)  # the same message again

    assert await _hash_of(conn, request_id, OWNER) == h("newer")


async def test_a_token_issued_before_a_resend_is_stale(conn: asyncpg.Connection) -> None:
    request_id = await _validating_request(conn)
    before = datetime.now(UTC) - timedelta(seconds=1)
    await store.reset_tokens(conn, request_id, [OWNER])

    await _deliver(conn, request_id, OWNER, h("from-before-the-resend"), before)

    assert await _hash_of(conn, request_id, OWNER) is None


async def test_the_same_message_twice_is_claimed_once_without_a_transaction(conn: asyncpg.Connection) -> None:
    request_id = await _validating_request(conn)
    data = ContactChangeTokenIssued(
        request_id=request_id, nic=OWNER, token_hash=h("once"), expires_at=datetime.now(UTC) + timedelta(days=1)
    )
    envelope = envelope_for(data)

    assert await on_token_issued(conn, envelope, data) is True
    assert await on_token_issued(conn, envelope, data) is False

    assert not conn.is_in_transaction()
    assert await _hash_of(conn, request_id, OWNER) == h("once")

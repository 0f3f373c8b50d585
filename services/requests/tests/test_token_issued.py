"""`contact_change.token_issued`: its one statement (claim and UPDATE) keeps only a token of the
round of codes a pending confirmer waits for, so that a late message (or one delivered again with
a new message id, which the inbox would not catch) never revives a spent token or one from before
a resend; which round is current never depends on the clocks of the hosts. Real PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from contacts_requests import schema, store
from contacts_requests.consumers import on_token_issued
from contacts_requests.contact_change import ContactChange
from contacts_requests.domain import PlannedChange
from contacts_shared.contracts import (
    ContactChangeTokenIssued,
    ContactType,
    RequestState,
    envelope_for,
)
from contacts_tools.testing import schema_pool

OWNER, WEBMASTER = "aa11111-ovh", "bb22222-ovh"


def h(name: str) -> str:
    """A token hash (sha256 hex) named for the test."""
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture
async def conn() -> AsyncIterator[asyncpg.Connection]:
    async with schema_pool("requests", schema.MIGRATIONS) as pool, pool.acquire() as conn:
        yield conn


async def _validating_request(conn: asyncpg.Connection) -> uuid.UUID:
    request_id = uuid.uuid4()
    planned = PlannedChange(ContactType.tech, from_="cc33333-ovh", to=WEBMASTER, confirmers=(OWNER, WEBMASTER))
    expires_at = datetime.now(UTC) + timedelta(days=7)
    await store.Changes().insert_request(ContactChange.submitted(str(request_id), "shop-example.web-hosting", planned, OWNER, expires_at).change).run(conn)
    await store.Changes().set_state(request_id, RequestState.validating, "system", "vetted").run(conn)
    return request_id


async def _deliver(
    conn: asyncpg.Connection, request_id: uuid.UUID, nic: str, token_hash: str, generation: int = 1, clock: timedelta = timedelta()
) -> None:
    """A `token_issued` as the notifier sends it, its clock `clock` off ours."""
    at = datetime.now(UTC) + clock
    data = ContactChangeTokenIssued(
        request_id=request_id, nic=nic, token_hash=token_hash, expires_at=at + timedelta(days=1), generation=generation
    )
    envelope = envelope_for(data).model_copy(update={"occurred_at": at})
    await on_token_issued(conn, envelope, data)


async def _hash_of(conn: asyncpg.Connection, request_id: uuid.UUID, nic: str) -> str | None:
    return await conn.fetchval("SELECT token_hash FROM confirmers WHERE request_id = $1 AND nic = $2", request_id, nic)


async def test_again_after_the_answer_does_not_revive_the_spent_token(conn: asyncpg.Connection) -> None:
    request_id = await _validating_request(conn)
    await _deliver(conn, request_id, WEBMASTER, h("hash-1"))
    assert await _hash_of(conn, request_id, WEBMASTER) == h("hash-1")
    await store.Changes().record_answer(request_id, WEBMASTER, "accepted", RequestState.validating, "accepted").run(conn)

    await _deliver(conn, request_id, WEBMASTER, h("hash-1"))

    assert await _hash_of(conn, request_id, WEBMASTER) is None


@pytest.mark.parametrize("clock", [timedelta(seconds=-5), timedelta(seconds=5)], ids=["notifier behind", "notifier ahead"])
async def test_a_token_from_before_a_resend_is_stale_whatever_the_clocks(conn: asyncpg.Connection, clock: timedelta) -> None:
    request_id = await _validating_request(conn)
    await _deliver(conn, request_id, OWNER, h("round-1"), generation=1, clock=clock)
    assert await store.new_round_of_codes(conn, request_id, [OWNER]) == {OWNER: 2}
    assert await _hash_of(conn, request_id, OWNER) is None

    await _deliver(conn, request_id, OWNER, h("round-1"), generation=1, clock=clock)  # late, or again
    assert await _hash_of(conn, request_id, OWNER) is None
    await _deliver(conn, request_id, OWNER, h("round-2"), generation=2, clock=clock)
    await _deliver(conn, request_id, OWNER, h("round-1"), generation=1, clock=-clock)
    assert await _hash_of(conn, request_id, OWNER) == h("round-2")


async def test_the_same_code_announced_again_keeps_its_failures(conn: asyncpg.Connection) -> None:
    request_id = await _validating_request(conn)
    await _deliver(conn, request_id, OWNER, h("code"))
    await store.Changes().count_token_failure(request_id, OWNER).run(conn)

    await _deliver(conn, request_id, OWNER, h("code"))  # its email was written again

    assert await conn.fetchval("SELECT failures FROM confirmers WHERE request_id = $1 AND nic = $2", request_id, OWNER) == 1


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

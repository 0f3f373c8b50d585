"""The notifier's handlers against the real PostgreSQL, run as the bus runs them: each claims
its message and queues its emails in one statement, with no transaction around it."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
from contacts_notifier.handlers import HANDLERS
from contacts_shared.contracts import (
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    Contract,
    envelope_for,
)
from contacts_shared.handling import by_routing_key

Validation = Callable[..., ContactChangeValidationRequested]
Done = Callable[[uuid.UUID], ContactChangeStateChanged]


async def deliver(pool: asyncpg.Pool, message: Contract, envelope: object = None) -> bool:
    envelope = envelope or envelope_for(message)
    handler = by_routing_key(HANDLERS)[envelope.type]
    assert handler.concerns is None or handler.concerns(message)
    async with pool.acquire() as conn:
        fresh = await handler(conn, envelope, message)
        assert not conn.is_in_transaction()
    return fresh


async def mails(pool: asyncpg.Pool) -> list[tuple[str, str, str, str]]:
    rows = await pool.fetch("SELECT kind, nic, email, state FROM mails ORDER BY id")
    return [tuple(r) for r in rows]


async def test_token_mails_are_queued_once_per_round(pool: asyncpg.Pool, validation: Validation) -> None:
    request_id = uuid.uuid4()
    message = validation(request_id)
    envelope = envelope_for(message)
    assert await deliver(pool, message, envelope) is True
    assert await deliver(pool, message, envelope) is False
    # The same round asked for in another message (a copy the inbox cannot recognise).
    assert await deliver(pool, validation(request_id)) is True
    assert await mails(pool) == [
        ("token", "cc3-ovh", "cc3@example.com", "pending"),
        ("token", "bb2-ovh", "bb2@example.com", "pending"),
    ]
    dedupe_keys = {r["dedupe_key"] for r in await pool.fetch("SELECT dedupe_key FROM mails")}
    assert dedupe_keys == {f"{request_id}:cc3-ovh:token:1", f"{request_id}:bb2-ovh:token:1"}


async def test_a_resend_supersedes_the_unsent_token_mails_only(pool: asyncpg.Pool, validation: Validation) -> None:
    request_id = uuid.uuid4()
    await deliver(pool, validation(request_id))
    await pool.execute("UPDATE mails SET state = 'sent' WHERE nic = 'cc3-ovh'")
    await deliver(pool, validation(request_id, generation=2))
    assert await mails(pool) == [
        ("token", "cc3-ovh", "cc3@example.com", "sent"),
        ("token", "bb2-ovh", "bb2@example.com", "superseded"),
        ("token", "cc3-ovh", "cc3@example.com", "pending"),
        ("token", "bb2-ovh", "bb2@example.com", "pending"),
    ]


async def test_outcome_mails_are_queued_once_per_request_and_state(pool: asyncpg.Pool, done_for: Done) -> None:
    done = done_for(uuid.uuid4())
    envelope = envelope_for(done)
    assert await deliver(pool, done, envelope) is True
    assert await deliver(pool, done, envelope) is False
    queued = await pool.fetch("SELECT nic, email, subject, body FROM mails WHERE kind = 'outcome' ORDER BY id")
    assert [(r["nic"], r["email"]) for r in queued] == [
        ("cc3-ovh", "cc3@example.com"),
        ("bb2-ovh", "bb2@example.com"),
        ("aa1-ovh", "aa1@example.com"),
    ]
    assert all(r["subject"] and "svc-1" in r["body"] for r in queued)
    # The same state announced again in another message (a replayed submission re-announces
    # the current state): it is claimed, and mails nobody twice.
    assert await deliver(pool, done) is True
    assert len(await pool.fetch("SELECT 1 FROM mails WHERE kind = 'outcome'")) == 3


async def test_an_outcome_stops_the_token_emails_still_waiting(pool: asyncpg.Pool, validation: Validation, done_for: Done) -> None:
    request_id, other_request = uuid.uuid4(), uuid.uuid4()
    await deliver(pool, validation(request_id))
    await deliver(pool, validation(other_request))
    await pool.execute("UPDATE mails SET state = 'sent' WHERE nic = 'cc3-ovh'")

    await deliver(pool, done_for(request_id))

    rows = await pool.fetch("SELECT request_id, nic, state FROM mails WHERE kind = 'token' ORDER BY id")
    assert [(r["request_id"] == request_id, r["nic"], r["state"]) for r in rows] == [
        (True, "cc3-ovh", "sent"),
        (True, "bb2-ovh", "superseded"),
        (False, "cc3-ovh", "sent"),
        (False, "bb2-ovh", "pending"),
    ]

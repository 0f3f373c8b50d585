"""The mailer against the real PostgreSQL and a real SMTP server (the sink): a token is
announced before its email leaves, a token email whose announcement fails is not sent, a batch
claimed by a live sender is left alone and one whose sender died is sent, and an email refused
for good is given up after the set number of refusals."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from contacts_notifier import store
from contacts_notifier.handlers import HANDLERS
from contacts_notifier.mailer import Mailer
from contacts_shared.contracts import (
    ContactChangeTokenIssued,
    ContactChangeValidationRequested,
    envelope_for,
    hash_token,
)
from contacts_shared.handling import by_routing_key
from contacts_shared.settings import NotifierSettings
from contacts_tools.mailsink import MailSink
from support import eventually, free_port

Validation = Callable[..., ContactChangeValidationRequested]


def settings(sink: MailSink, **changes: object) -> NotifierSettings:
    return NotifierSettings(smtp_port=sink.smtp_port, token_secret="t" * 32, **changes)


async def no_broker_needed(*_: ContactChangeTokenIssued) -> None:
    return None


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    sink = MailSink("127.0.0.1", free_port(), free_port())
    await sink.start_in_this_loop()
    yield sink
    sink.stop()


async def _queue_two_token_mails(pool: asyncpg.Pool, validation: Validation) -> None:
    message = validation(uuid.uuid4())
    envelope = envelope_for(message)
    async with pool.acquire() as conn:
        assert await by_routing_key(HANDLERS)[envelope.type](conn, envelope, message) is True


async def test_tokens_are_announced_before_their_emails_leave(pool: asyncpg.Pool, sink: MailSink, validation: Validation) -> None:
    await _queue_two_token_mails(pool, validation)
    announced: list[ContactChangeTokenIssued] = []

    async def announce(*tokens: ContactChangeTokenIssued) -> None:
        assert sink.store.messages() == [], "an email left before its token was announced"
        announced.extend(tokens)

    mailer = Mailer(pool, settings(sink), announce=announce)
    assert await mailer.send_batch() == 2

    assert sorted(to for m in sink.store.messages() for to in m.rcpt_tos) == ["bb2@example.com", "cc3@example.com"]
    # What was announced is the hash of the code each email carries (nothing else keeps one).
    mailed = {hash_token(m) for mail in sink.store.messages() for m in re.findall(r"\?token=([A-Za-z0-9_-]+)", mail.text)}
    assert mailed == {t.token_hash for t in announced} and len(mailed) == 2
    assert {r["state"] for r in await pool.fetch("SELECT state FROM mails")} == {"sent"}


async def test_a_token_email_whose_announcement_fails_waits(pool: asyncpg.Pool, sink: MailSink, validation: Validation) -> None:
    await _queue_two_token_mails(pool, validation)

    async def broker_away(*_: ContactChangeTokenIssued) -> None:
        raise ConnectionError("broker away")

    mailer = Mailer(pool, settings(sink), announce=broker_away)
    assert await mailer.send_batch() == 2

    assert sink.store.messages() == []
    rows = await pool.fetch("SELECT state, attempts, last_error, next_attempt_at > now() AS later FROM mails")
    assert [(r["state"], r["attempts"], r["later"]) for r in rows] == [("pending", 1, True)] * 2
    assert all(r["last_error"].startswith("token not announced: ConnectionError") for r in rows)


async def test_emails_claimed_by_a_live_sender_are_left_alone_and_taken_once_it_dies(
    pool: asyncpg.Pool, sink: MailSink, validation: Validation
) -> None:
    await _queue_two_token_mails(pool, validation)
    sender = await pool.acquire()
    await store.begin_claim(sender, 42)
    assert len(await store.claim_due(sender, 20, 42)) == 2
    mailer = Mailer(pool, settings(sink), announce=no_broker_needed)

    assert await mailer.send_batch() == 0  # another sender (a replica) skips them

    sender.terminate()  # the sender's process died: its connection, and its lock, are gone
    await pool.release(sender)
    # PostgreSQL drops the lock once it sees the connection closed: a moment later.
    assert await eventually(mailer.send_batch, timeout=5, what="the dead sender's emails to be sent") == 2
    assert len(sink.store.messages()) == 2
    rows = await pool.fetch("SELECT state, claim FROM mails")
    assert [(r["state"], r["claim"]) for r in rows] == [("sent", None)] * 2


async def test_each_email_is_marked_sent_as_it_leaves(pool: asyncpg.Pool, sink: MailSink, validation: Validation) -> None:
    """What a crash between two emails of a batch would find: the first one already recorded."""
    await _queue_two_token_mails(pool, validation)
    marks: list[list[str]] = []
    mailer = Mailer(pool, settings(sink), announce=no_broker_needed)
    send = mailer.smtp.send

    async def send_and_look(*args: object, **kwargs: object) -> object:
        marks.append([r["state"] for r in await pool.fetch("SELECT state FROM mails ORDER BY id")])
        return await send(*args, **kwargs)

    mailer.smtp.send = send_and_look  # type: ignore[method-assign]
    assert await mailer.send_batch() == 2

    assert marks == [["pending", "pending"], ["sent", "pending"]]


async def test_an_email_refused_for_good_is_given_up_and_said_so(
    pool: asyncpg.Pool, sink: MailSink, validation: Validation
) -> None:
    await _queue_two_token_mails(pool, validation)
    sink.refuse("bb2@example.com")
    mailer = Mailer(pool, settings(sink, smtp_max_refusals=2), announce=no_broker_needed)

    assert await mailer.send_batch() == 2
    assert [to for m in sink.store.messages() for to in m.rcpt_tos] == ["cc3@example.com"]
    refused = await pool.fetchrow("SELECT state, refusals, last_error FROM mails WHERE nic = 'bb2-ovh'")
    assert (refused["state"], refused["refusals"]) == ("pending", 1) and "550" in refused["last_error"]
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0

    await pool.execute("UPDATE mails SET next_attempt_at = now()")
    assert await mailer.send_batch() == 1
    refused = await pool.fetchrow("SELECT state, refusals FROM mails WHERE nic = 'bb2-ovh'")
    assert (refused["state"], refused["refusals"]) == ("failed", 2)
    (told,) = await pool.fetch("SELECT routing_key, body FROM outbox")
    assert told["routing_key"] == "contact_change.email_failed"
    assert '"nic":"bb2-ovh"' in told["body"] and '"smtp_code":550' in told["body"] and "example.com" not in told["body"]
    await pool.execute("UPDATE mails SET next_attempt_at = now()")
    assert await mailer.send_batch() == 0  # nothing more is tried

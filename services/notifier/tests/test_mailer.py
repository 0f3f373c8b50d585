"""The mailer against the real PostgreSQL and a real SMTP server (the sink): a token is
announced before its email leaves, and a token email whose announcement fails is not sent."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from contacts_notifier.handlers import HANDLERS
from contacts_notifier.mailer import Mailer
from contacts_shared.contracts import (
    ContactChangeTokenIssued,
    ContactChangeValidationRequested,
    envelope_for,
)
from contacts_shared.mailsink import MailSink
from contacts_shared.settings import NotifierSettings

Validation = Callable[[uuid.UUID], ContactChangeValidationRequested]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    sink = MailSink("127.0.0.1", _free_port(), _free_port())
    await sink.start_in_this_loop()
    yield sink
    sink.stop()


async def _queue_two_token_mails(pool: asyncpg.Pool, validation: Validation) -> None:
    message = validation(uuid.uuid4())
    envelope = envelope_for(message)
    async with pool.acquire() as conn:
        assert await HANDLERS[envelope.type](conn, envelope, message) is True


async def test_tokens_are_announced_before_their_emails_leave(pool: asyncpg.Pool, sink: MailSink, validation: Validation) -> None:
    await _queue_two_token_mails(pool, validation)
    announced: list[ContactChangeTokenIssued] = []

    async def announce(*tokens: ContactChangeTokenIssued) -> None:
        assert sink.store.messages() == [], "an email left before its token was announced"
        announced.extend(tokens)

    mailer = Mailer(pool, NotifierSettings(smtp_port=sink.smtp_port, token_secret="t" * 32), announce=announce)
    assert await mailer.send_batch() == 2

    assert sorted(to for m in sink.store.messages() for to in m.rcpt_tos) == ["bb2@example.com", "cc3@example.com"]
    recorded = {r["token_hash"] for r in await pool.fetch("SELECT token_hash FROM tokens")}
    assert recorded == {t.token_hash for t in announced} and len(recorded) == 2
    assert {r["state"] for r in await pool.fetch("SELECT state FROM mails")} == {"sent"}


async def test_a_token_email_whose_announcement_fails_waits(pool: asyncpg.Pool, sink: MailSink, validation: Validation) -> None:
    await _queue_two_token_mails(pool, validation)

    async def broker_away(*_: ContactChangeTokenIssued) -> None:
        raise ConnectionError("broker away")

    mailer = Mailer(pool, NotifierSettings(smtp_port=sink.smtp_port, token_secret="t" * 32), announce=broker_away)
    assert await mailer.send_batch() == 2

    assert sink.store.messages() == []
    assert await pool.fetchval("SELECT count(*) FROM tokens") == 0
    rows = await pool.fetch("SELECT state, attempts, last_error, next_attempt_at > now() AS later FROM mails")
    assert [(r["state"], r["attempts"], r["later"]) for r in rows] == [("pending", 1, True)] * 2
    assert all(r["last_error"].startswith("token not announced: ConnectionError") for r in rows)

"""Each email in its recipient's language, said by its Content-Language header: the token emails
written when sent (their language kept in the mail log), the outcomes and heads-ups when queued;
against the real PostgreSQL and a real SMTP sink."""

from __future__ import annotations

import email
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from contacts_notifier.domain import outcome_email, token_email
from contacts_notifier.handlers import HANDLERS
from contacts_notifier.mailer import Mailer
from contacts_shared.contracts import (
    Confirmer,
    ContactChangeStateChanged,
    ContactChangeTokenIssued,
    ContactChangeValidationRequested,
    Contract,
    Informed,
    Party,
    envelope_for,
    utcnow,
)
from contacts_shared.handling import by_routing_key
from contacts_shared.settings import NotifierSettings
from contacts_tools.mailsink import MailSink
from support import free_port

ABOUT = {"service": "svc-1", "type": "tech", "from_": "aa1-ovh", "to": "bb2-ovh"}


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    sink = MailSink("127.0.0.1", free_port(), free_port())
    await sink.start_in_this_loop()
    yield sink
    sink.stop()


async def deliver(pool: asyncpg.Pool, message: Contract) -> None:
    envelope = envelope_for(message)
    async with pool.acquire() as conn:
        assert await by_routing_key(HANDLERS)[envelope.type](conn, envelope, message) is True


async def send_all(pool: asyncpg.Pool, sink: MailSink) -> dict[str, email.message.Message]:
    async def announce(*_: ContactChangeTokenIssued) -> None:
        return None

    mailer = Mailer(pool, NotifierSettings(smtp_port=sink.smtp_port, token_secret="t" * 32), announce=announce)
    await mailer.send_batch()
    return {m.rcpt_tos[0]: email.message_from_bytes(m.raw) for m in sink.store.messages()}


def test_the_words_of_each_email_in_french() -> None:
    common = {"request_id": "r1", "service": "svc-1", "ctype": "tech", "from_": "aa1-ovh", "to": "bb2-ovh", "requester": "cc3-ovh"}
    code = {"recipient": "bb2-ovh", "token": "T", "link": "http://x/requests/r1?token=T", "expires_at": datetime(2026, 2, 14, 12, 0, tzinfo=UTC)}
    french = token_email(**common, **code, language="fr-CA")
    assert french.language == "fr"
    assert french.subject == "À confirmer\u00a0: nouveau contact technique pour svc-1"
    assert "cc3-ovh demande que bb2-ovh devienne le contact technique de svc-1" in french.body
    assert "jusqu’au 14 févr. 2026, 12:00 UTC" in french.body
    english = token_email(**common, **code, language="de")  # no German: English
    assert english.language == "en" and english.subject == "Please confirm: new technical contact for svc-1"
    assert "until 2026-02-14 12:00 UTC" in english.body


async def test_each_recipient_gets_their_language_with_its_content_language(pool: asyncpg.Pool, sink: MailSink) -> None:
    request_id = uuid.uuid4()
    await deliver(
        pool,
        ContactChangeValidationRequested(
            request_id=request_id,
            **ABOUT,
            requester="cc3-ovh",
            confirmers=[Confirmer(nic="cc3-ovh", email="cc3@example.com"), Confirmer(nic="bb2-ovh", email="bb2@example.com", language="fr")],
            informed=[Informed(nic="aa1-ovh", email="aa1@example.com", language="fr-BE")],
            expires_at=utcnow() + timedelta(days=7),
        ),
    )
    # The language goes in the mail log with each email, a token email's until it is written.
    rows = await pool.fetch("SELECT nic, kind, language FROM mails ORDER BY nic")
    assert [tuple(r) for r in rows] == [("aa1-ovh", "outcome", "fr"), ("bb2-ovh", "token", "fr"), ("cc3-ovh", "token", "en")]

    sent = await send_all(pool, sink)
    assert sent["bb2@example.com"]["Content-Language"] == "fr"
    assert str(email.header.make_header(email.header.decode_header(sent["bb2@example.com"]["Subject"]))).startswith("À confirmer")
    assert "Votre code de validation personnel" in sent["bb2@example.com"].get_payload(decode=True).decode()
    assert sent["cc3@example.com"]["Content-Language"] == "en"
    assert sent["cc3@example.com"]["Subject"] == "Please confirm: new technical contact for svc-1"
    heads_up = sent["aa1@example.com"]
    assert heads_up["Content-Language"] == "fr" and "Rien ne vous est demandé" in heads_up.get_payload(decode=True).decode()


async def test_an_outcome_in_each_party_s_language(pool: asyncpg.Pool, sink: MailSink) -> None:
    done = ContactChangeStateChanged(
        request_id=uuid.uuid4(),
        **ABOUT,
        state="done",
        parties=[
            Party(nic="cc3-ovh", email="cc3@example.com", role="requester"),
            Party(nic="aa1-ovh", email="aa1@example.com", role="from", language="en-GB"),
            Party(nic="bb2-ovh", email="bb2@example.com", role="to", language="fr"),
        ],
    )
    assert outcome_email(done, "bb2-ovh", "fr").subject == "Changement de contact effectué pour svc-1"
    await deliver(pool, done)

    sent = await send_all(pool, sink)
    assert {address: mail["Content-Language"] for address, mail in sent.items()} == {
        "cc3@example.com": "en",
        "aa1@example.com": "en",
        "bb2@example.com": "fr",
    }
    body = sent["bb2@example.com"].get_payload(decode=True).decode()
    assert "bb2-ovh est désormais le contact technique" in body and "Demande " in body


async def test_a_row_queued_before_languages_goes_out_in_english(pool: asyncpg.Pool, sink: MailSink) -> None:
    await deliver(
        pool,
        ContactChangeValidationRequested(
            request_id=uuid.uuid4(),
            **ABOUT,
            requester="cc3-ovh",
            confirmers=[Confirmer(nic="bb2-ovh", email="bb2@example.com", language="fr")],
            expires_at=utcnow() + timedelta(days=7),
        ),
    )
    await pool.execute("UPDATE mails SET language = NULL")  # as the previous release queued it

    sent = await send_all(pool, sink)
    assert sent["bb2@example.com"]["Content-Language"] == "en"
    assert sent["bb2@example.com"]["Subject"] == "Please confirm: new technical contact for svc-1"

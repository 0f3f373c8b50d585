"""Sends the queued emails over SMTP, one transaction per email.

For a token email the token is made, its hash recorded and `token_issued` put in the outbox
in the same transaction as the send is marked done: if the send fails, none of it happened
and the email is retried later with a new token. While the SMTP server is down, each email
is retried with a growing delay (capped, so mail flows again soon after it is back).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from email.message import EmailMessage

import aiosmtplib
import asyncpg
import structlog

from contacts_notifier import store
from contacts_notifier.domain import Email, confirm_link, new_token, token_email, token_expiry
from contacts_shared.bus import enqueue
from contacts_shared.contracts import ContactChangeTokenIssued, utcnow
from contacts_shared.observability import EMAILS_FAILED, EMAILS_SENT
from contacts_shared.settings import NotifierSettings

log = structlog.get_logger("contacts.notifier.mailer")

MAX_RETRY_DELAY = 5.0


class Mailer:
    def __init__(self, pool: asyncpg.Pool, settings: NotifierSettings) -> None:
        self.pool = pool
        self.settings = settings

    async def send_next(self) -> int:
        """Send (or postpone) the oldest due email; returns 0 when none is due."""
        async with self.pool.acquire() as conn, conn.transaction():
            mail = await store.next_due_mail(conn)
            if mail is None:
                return 0
            try:
                async with conn.transaction():  # savepoint: a failed send undoes the token
                    email = await self._compose(conn, mail)
                    await self._deliver(mail, email)
                    await store.mark_sent(conn, mail["id"])
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                delay = min(0.2 * 2 ** mail["attempts"], MAX_RETRY_DELAY)
                await store.postpone(conn, mail["id"], delay, f"{type(exc).__name__}: {exc}"[:300])
                EMAILS_FAILED.labels(mail["kind"]).inc()
                log.warning("email not sent, will retry", mail_id=mail["id"], attempts=mail["attempts"] + 1, retry_in=delay)
                return 1
        EMAILS_SENT.labels(mail["kind"]).inc()
        log.info("email sent", mail_id=mail["id"], request_id=str(mail["request_id"]), kind=mail["kind"], nic=mail["nic"])
        return 1

    async def _compose(self, conn: asyncpg.Connection, mail: asyncpg.Record) -> Email:
        if mail["kind"] == "outcome":
            return Email(mail["subject"], mail["body"])
        context = json.loads(mail["token_context"])  # asyncpg returns jsonb as text
        now = utcnow()
        expires_at = token_expiry(datetime.fromisoformat(context["expires_at"]), now, self.settings.token_ttl.total_seconds())
        token, token_hash = new_token()
        request_id: uuid.UUID = mail["request_id"]
        await store.record_token(conn, request_id, mail["nic"], token_hash, expires_at)
        await enqueue(
            conn,
            ContactChangeTokenIssued(request_id=request_id, nic=mail["nic"], token_hash=token_hash, expires_at=expires_at),
        )
        return token_email(
            request_id=str(request_id),
            service=context["service"],
            ctype=context["type"],
            from_=context["from"],
            to=context["to"],
            requester=context["requester"],
            recipient=mail["nic"],
            token=token,
            link=confirm_link(self.settings.public_url, str(request_id), token),
            expires_at=expires_at,
        )

    async def _deliver(self, mail: asyncpg.Record, email: Email) -> None:
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = mail["email"]
        message["Subject"] = email.subject
        # Stable per mail row, so a receiving system can recognise a retry.
        message["Message-ID"] = f"<mail-{mail['id']}.{mail['request_id']}@contacts>"
        message["X-Contacts-Request-Id"] = str(mail["request_id"])
        message.set_content(email.body)
        await aiosmtplib.send(
            message,
            hostname=self.settings.smtp_host,
            port=self.settings.smtp_port,
            username=self.settings.smtp_user,
            password=self.settings.smtp_password,
            start_tls=self.settings.smtp_starttls,
            timeout=10,
        )

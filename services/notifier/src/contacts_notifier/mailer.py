"""Sends the queued emails over SMTP in batches: one transaction per batch, over connections
kept open between batches.

For a token email the code is derived when it is written (`validation_code`) and
`token_issued` (its hash and round) is published, confirmed by the broker, before the email
leaves: by the time the confirmer reads it, the requests service knows the hash, and an answer
does not wait for it. Only the emails whose announcement was confirmed are sent. An email
written again (the send failed, or the process died before recording it) carries the same code
and announces the same hash, so every copy that reached a mailbox works. While the SMTP server
or the broker is down, each email is retried with a growing delay (capped, so mail flows again
soon after it is back).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.mime.text import MIMEText

import aiosmtplib
import asyncpg
import structlog
from contacts_shared.contracts import ContactChangeTokenIssued, utcnow
from contacts_shared.observability import EMAILS_FAILED, EMAILS_SENT
from contacts_shared.settings import NotifierSettings

from contacts_notifier import store
from contacts_notifier.domain import (
    Email,
    confirm_link,
    token_email,
    token_expiry,
    validation_code,
)

log = structlog.get_logger("contacts.notifier.mailer")

MAX_RETRY_DELAY = 5.0
# A batch is sent over one SMTP connection and committed once: connecting and committing per
# email made the mailer the bottleneck of the whole flow (see bench/README.md).
BATCH_SIZE = 20
# Batches sent at once, each on its own connection (SKIP LOCKED keeps them apart).
PARALLEL_BATCHES = 3
# How long a batch's token announcements may wait for the broker's confirms.
ANNOUNCE_TIMEOUT = 5.0

# Text that is not plain ASCII goes as UTF-8, quoted-printable (stays readable in the source).
_UTF8_QUOTED_PRINTABLE = Charset("utf-8")
_UTF8_QUOTED_PRINTABLE.body_encoding = QP


class Mailer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: NotifierSettings,
        announce: Callable[..., Awaitable[None]],
        batch_size: int = BATCH_SIZE,
        parallel: int = PARALLEL_BATCHES,
    ) -> None:
        self.pool = pool
        self.settings = settings
        # Publishes `token_issued` messages, confirmed (ServiceBus.publish_now).
        self.announce = announce
        self.batch_size = batch_size
        self.parallel = parallel
        # Open SMTP connections between batches: connecting (and EHLO, QUIT) cost more than a send.
        self._idle: list[aiosmtplib.SMTP] = []

    async def send_due(self) -> int:
        """Send (or postpone) due emails; returns how many (fewer than `batch_size * parallel`:
        a batch came back short, so none was left due).

        One batch first: a wake usually finds the two or three emails of one event, and batches
        started alongside it found nothing, each an empty transaction (a third of the notifier's
        statements, bench/README.md). Only a full batch means a backlog, drained a few batches
        at once."""
        sent = await self.send_batch()
        if sent < self.batch_size:
            return sent
        return sent + sum(await asyncio.gather(*(self.send_batch() for _ in range(self.parallel))))

    async def send_batch(self) -> int:
        """Send (or postpone) up to a batch of the oldest due emails; returns how many.

        The tokens of the batch's token emails are announced first; then the emails go out;
        then, in the same transaction, the tokens that went out are recorded and their emails
        marked sent. A failed send or announcement postpones only the emails concerned.
        """
        sent: list[asyncpg.Record] = []
        issued: list[ContactChangeTokenIssued] = []
        failed: list[tuple[asyncpg.Record, str]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            mails = await store.due_mails(conn, self.batch_size)
            if not mails:
                return 0
            to_send = [(mail, *self._compose(mail)) for mail in mails]
            if tokens := [token for _, _, token in to_send if token is not None]:
                try:
                    await asyncio.wait_for(self.announce(*tokens), ANNOUNCE_TIMEOUT)
                except Exception as exc:  # noqa: BLE001 - broker away: the token emails wait for it
                    reason = f"token not announced: {type(exc).__name__}: {exc}"[:300]
                    failed += [(mail, reason) for mail, _, token in to_send if token is not None]
                    to_send = [(mail, email, token) for mail, email, token in to_send if token is None]
            smtp = self._idle.pop() if self._idle else None
            try:
                for mail, email, token in to_send:
                    try:
                        smtp = await self._send(smtp, mail, email)
                    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                        # The next email starts on a fresh connection, whatever state this one is in.
                        if smtp is not None:
                            smtp.close()
                            smtp = None
                        failed.append((mail, f"{type(exc).__name__}: {exc}"[:300]))
                        continue
                    sent.append(mail)
                    if token is not None:
                        issued.append(token)
            finally:
                if smtp is not None and smtp.is_connected:
                    self._idle.append(smtp)
            if issued:
                await store.record_tokens(conn, [(t.request_id, t.nic, t.token_hash, t.expires_at) for t in issued])
            if sent:
                await store.mark_sent(conn, [mail["id"] for mail in sent])
            for mail, reason in failed:
                delay = min(0.2 * 2 ** mail["attempts"], MAX_RETRY_DELAY)
                await store.postpone(conn, mail["id"], delay, reason)
                EMAILS_FAILED.labels(mail["kind"]).inc()
                log.warning("email not sent, will retry", mail_id=mail["id"], attempts=mail["attempts"] + 1, retry_in=delay)
        for mail in sent:
            EMAILS_SENT.labels(mail["kind"]).inc()
            log.info("email sent", mail_id=mail["id"], request_id=str(mail["request_id"]), kind=mail["kind"], nic=mail["nic"])
        return len(mails)

    def _compose(self, mail: asyncpg.Record) -> tuple[Email, ContactChangeTokenIssued | None]:
        """The email, and for a token email the announcement of its fresh token's hash."""
        if mail["kind"] == "outcome":
            return Email(mail["subject"], mail["body"]), None
        context = json.loads(mail["token_context"])  # asyncpg returns jsonb as text
        now = utcnow()
        expires_at = token_expiry(datetime.fromisoformat(context["expires_at"]), now, self.settings.token_ttl.total_seconds())
        request_id: uuid.UUID = mail["request_id"]
        generation = mail["generation"] or 1  # rows queued before rounds were numbered
        key = self.settings.token_secret.get_secret_value().encode()
        token, token_hash = validation_code(key, str(request_id), mail["nic"], generation)
        email = token_email(
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
        issued = ContactChangeTokenIssued(
            request_id=request_id, nic=mail["nic"], token_hash=token_hash, expires_at=expires_at, generation=generation
        )
        return email, issued

    async def _send(self, smtp: aiosmtplib.SMTP | None, mail: asyncpg.Record, email: Email) -> aiosmtplib.SMTP:
        """Deliver over `smtp` if it is still open, else over a new connection; returns the
        connection used. A kept connection the server dropped meanwhile is replaced once."""
        if smtp is not None and smtp.is_connected:
            try:
                await self._deliver(smtp, mail, email)
                return smtp
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                smtp.close()
        smtp = await self._connect()
        try:
            await self._deliver(smtp, mail, email)
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _connect(self) -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(
            hostname=self.settings.smtp_host,
            port=self.settings.smtp_port,
            username=self.settings.smtp_user,
            password=self.settings.smtp_password,
            start_tls=self.settings.smtp_starttls,
            timeout=10,
        )
        await smtp.connect()
        return smtp

    async def _deliver(self, smtp: aiosmtplib.SMTP, mail: asyncpg.Record, email: Email) -> None:
        # The compat32 classes: the default policy's header objects made building and
        # flattening an email cost 5 times as much CPU (0.56 against 0.11 ms; bench/README.md).
        message = MIMEText(email.body, "plain", "us-ascii" if email.body.isascii() else _UTF8_QUOTED_PRINTABLE)
        message["From"] = self.settings.mail_from
        message["To"] = mail["email"]
        message["Subject"] = email.subject if email.subject.isascii() else Header(email.subject, "utf-8")
        # Stable per mail row, so a receiving system can recognise a retry.
        message["Message-ID"] = f"<mail-{mail['id']}.{mail['request_id']}@contacts>"
        message["X-Contacts-Request-Id"] = str(mail["request_id"])
        await smtp.send_message(message)

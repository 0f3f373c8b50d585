"""Sends the queued emails over SMTP in batches, and records each one as soon as it is sent.

A batch is claimed, not held in a transaction: its rows carry the key of an advisory lock
that the sending connection holds while it works, so other senders (and replicas) skip them;
if the process dies, PostgreSQL drops the lock with the connection and the rows are due again
at once. Each email is marked sent by its own statement right after the SMTP server took it,
so a crash sends again at most the one email between the two.

For a token email the code is derived when it is written (`validation_code`) and
`token_issued` (its hash and round) is published, confirmed by the broker, before the email
leaves: by the time the confirmer reads it, the requests service knows the hash, and an answer
does not wait for it. Only the emails whose announcement was confirmed are sent. An email
written again (the send failed, or the process died before recording it) carries the same code
and announces the same hash, so every copy that reached a mailbox works.

While the SMTP server or the broker is down, each email is retried with a growing delay
(capped, so mail flows again soon after it is back). An email the server refuses for good
(5xx to its recipient) is retried a set number of times, then marked failed, and the requests
service is told, so the request's history says who could not be reached.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import structlog
from contacts_shared.contracts import (
    ContactChangeEmailFailed,
    ContactChangeTokenIssued,
    utcnow,
)
from contacts_shared.crashpoints import crash_point
from contacts_shared.i18n import SOURCE_LANGUAGE
from contacts_shared.observability import EMAILS_FAILED, EMAILS_SENT
from contacts_shared.settings import NotifierSettings
from contacts_shared.wording import masked_email

from contacts_notifier import store
from contacts_notifier.domain import (
    Email,
    batch_link,
    batch_token_email,
    confirm_link,
    retry_delay,
    token_email,
    token_expiry,
    validation_code,
)
from contacts_notifier.smtp import SEND_ERRORS, SmtpClient, refusal_code

log = structlog.get_logger("contacts.notifier.mailer")

# A batch is sent over one SMTP connection: connecting per email made the mailer the
# bottleneck of the whole flow (see bench/README.md).
BATCH_SIZE = 20
# Batches sent at once, each on its own connection (the claims keep them apart).
PARALLEL_BATCHES = 3
# How long a batch's token announcements may wait for the broker's confirms.
ANNOUNCE_TIMEOUT = 5.0


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
        self.smtp = SmtpClient(settings)
        self._key = settings.token_secret.get_secret_value().encode()

    async def send_due(self) -> int:
        """Send (or postpone) due emails; returns how many (fewer than `batch_size * parallel`:
        a batch came back short, so none was left due).

        One batch first: a wake usually finds the two or three emails of one event, and batches
        started alongside it found nothing (a third of the notifier's statements,
        bench/README.md). Only a full batch means a backlog, drained a few batches at once."""
        sent = await self.send_batch()
        if sent < self.batch_size:
            return sent
        return sent + sum(await asyncio.gather(*(self.send_batch() for _ in range(self.parallel))))

    async def send_batch(self) -> int:
        """Send (or postpone) up to a batch of the oldest due emails; returns how many.

        The tokens of the batch's token emails are announced first; then each email goes out
        and is recorded at once (sent, with its token; or postponed, or failed for good)."""
        async with self.pool.acquire() as conn:
            claim = secrets.randbits(63)
            await store.begin_claim(conn, claim)
            try:
                mails = await store.claim_due(conn, self.batch_size, claim)
                await self._send_claimed(conn, mails)
            finally:
                await store.end_claim(conn, claim)
        return len(mails)

    async def _send_claimed(self, conn: asyncpg.Connection, mails: list[asyncpg.Record]) -> None:
        to_send = [(mail, *self._compose(mail)) for mail in mails]
        if tokens := [token for _, _, issued in to_send for token in issued]:
            try:
                await asyncio.wait_for(self.announce(*tokens), ANNOUNCE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - broker away: the token emails wait for it
                reason = f"token not announced: {type(exc).__name__}: {exc}"
                for mail, _, issued in to_send:
                    if issued:
                        await self._failed(conn, mail, reason, refusal=None)
                to_send = [(mail, email, issued) for mail, email, issued in to_send if not issued]
        smtp = self.smtp.take()
        try:
            for mail, email, _ in to_send:
                message_id = f"<mail-{mail['id']}.{mail['request_id']}@contacts>"
                try:
                    smtp = await self.smtp.send(smtp, mail["email"], message_id, str(mail["request_id"]), email)
                except SEND_ERRORS as exc:
                    smtp = None  # closed by the client; the next email starts afresh
                    await self._failed(conn, mail, f"{type(exc).__name__}: {exc}", refusal=refusal_code(exc))
                    continue
                crash_point("after-smtp-before-mark")
                await store.mark_sent(conn, mail["id"])
                EMAILS_SENT.labels(mail["kind"]).inc()
                log.info("email sent", mail_id=mail["id"], request_id=str(mail["request_id"]), kind=mail["kind"], nic=mail["nic"])
        finally:
            self.smtp.give_back(smtp)

    async def _failed(self, conn: asyncpg.Connection, mail: asyncpg.Record, reason: str, refusal: int | None) -> None:
        """Postpone the email, or, refused for good once too often, give it up and say so."""
        EMAILS_FAILED.labels(mail["kind"]).inc()
        refusals = mail["refusals"] + (refusal is not None)
        if refusal is not None and refusals >= self.settings.smtp_max_refusals:
            failed = [
                ContactChangeEmailFailed(request_id=request_id, nic=mail["nic"], kind=mail["kind"], smtp_code=refusal)
                for request_id in _requests_of(mail)
            ]
            await store.give_up(conn, mail["id"], reason[:300], *failed)
            log.error("email refused for good, not sent", mail_id=mail["id"], request_id=str(mail["request_id"]), nic=mail["nic"], smtp_code=refusal)
            return
        delay = retry_delay(mail["attempts"])
        await store.postpone(conn, mail["id"], delay, reason[:300], refused=refusal is not None)
        log.warning("email not sent, will retry", mail_id=mail["id"], attempts=mail["attempts"] + 1, retry_in=delay, smtp_code=refusal)

    def _compose(self, mail: asyncpg.Record) -> tuple[Email, list[ContactChangeTokenIssued]]:
        """The email, and for a token email the announcement of its code's hash (one per request
        for a batch's email). In the language of its row (English for a row queued before
        languages): an outcome was written when queued, a token email is written now."""
        if mail["kind"] == "outcome":
            return Email(mail["subject"], mail["body"], mail["language"] or SOURCE_LANGUAGE), []
        context = json.loads(mail["token_context"])  # asyncpg returns jsonb as text
        expires_at = token_expiry(datetime.fromisoformat(context["expires_at"]), utcnow(), self.settings.token_ttl.total_seconds())
        if "batch_id" in context:
            return self._compose_batch(mail, context, expires_at)
        request_id: uuid.UUID = mail["request_id"]
        generation = mail["generation"] or 1  # rows queued before rounds were numbered
        token, token_hash = validation_code(self._key, str(request_id), mail["nic"], generation)
        email = token_email(
            request_id=str(request_id),
            service=context["service"],
            ctype=context["type"],
            from_=context["from"],
            to=context["to"],
            requester=context["requester"],
            reminder=context.get("reminder", False),  # rows queued before reminders had none
            recipient=mail["nic"],
            token=token,
            link=confirm_link(self.settings.public_url, str(request_id), token),
            expires_at=expires_at,
            language=mail["language"] or SOURCE_LANGUAGE,
        )
        issued = ContactChangeTokenIssued(
            request_id=request_id,
            nic=mail["nic"],
            token_hash=token_hash,
            expires_at=expires_at,
            generation=generation,
            sent_to=masked_email(mail["email"]),
        )
        return email, [issued]

    def _compose_batch(self, mail: asyncpg.Record, context: dict, expires_at: datetime) -> tuple[Email, list[ContactChangeTokenIssued]]:
        """A batch's email: one code, derived from the batch, announced for each of its requests
        waiting for the confirmer (the first round of each)."""
        batch_id = context["batch_id"]
        token, token_hash = validation_code(self._key, f"batch:{batch_id}", mail["nic"], 1)
        email = batch_token_email(
            batch_id=batch_id,
            items=context["items"],
            requester=context["requester"],
            recipient=mail["nic"],
            token=token,
            link=batch_link(self.settings.public_url, batch_id, token),
            expires_at=expires_at,
            language=mail["language"] or SOURCE_LANGUAGE,
        )
        issued = [
            ContactChangeTokenIssued(
                request_id=uuid.UUID(item["request_id"]),
                nic=mail["nic"],
                token_hash=token_hash,
                expires_at=expires_at,
                generation=1,
                sent_to=masked_email(mail["email"]),
            )
            for item in context["items"]
        ]
        return email, issued


def _requests_of(mail: asyncpg.Record) -> list[uuid.UUID]:
    """The requests an email is about: its own, or for a batch's email each request it listed."""
    context = json.loads(mail["token_context"]) if mail["token_context"] else {}
    if "batch_id" in context:
        return [uuid.UUID(item["request_id"]) for item in context["items"]]
    return [mail["request_id"]]

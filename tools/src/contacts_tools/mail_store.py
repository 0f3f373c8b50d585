"""The mail sink's memory: every message received over SMTP, parsed for reading (sender,
recipients, subject, text), and the aiosmtpd handler that fills it."""

from __future__ import annotations

import email
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class StoredMail:
    id: int
    received_at: datetime
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    text: str  # the decoded plain-text part ("" when the message has none)
    raw: bytes

    def is_for(self, address: str) -> bool:
        wanted = address.strip().lower()
        return any(rcpt.lower() == wanted for rcpt in self.rcpt_tos)

    def summary(self) -> dict[str, Any]:
        """The JSON form of the message, without its raw source."""
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "subject": self.subject,
            "text": self.text,
        }

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "raw": self.raw.decode("utf-8", errors="replace")}


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def parse_mail(raw: bytes) -> tuple[str, str]:
    """(subject, plain-text body) of a raw RFC 5322 message, with encodings undone.

    With the `compat32` classes: the default policy's header objects made parsing cost ten
    times as much CPU (0.57 against 0.05 ms a message), and under load the sink shares the
    machine with the system it receives from (bench/README.md).
    """
    message = email.message_from_bytes(raw)
    # Unfolded (RFC 5322: a line break before white space is not part of the value), then decoded.
    subject = str(make_header(decode_header(_FOLD.sub("", message.get("subject", "")))))
    body = next((part for part in message.walk() if part.get_content_type() == "text/plain" and part.get_content_disposition() != "attachment"), None)
    if body is None:
        return subject, ""
    payload = body.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return subject, ""
    charset = body.get_content_charset() or "us-ascii"
    try:
        text = payload.decode(charset, errors="replace")
    except LookupError:  # unknown charset
        text = payload.decode("utf-8", errors="replace")
    # SMTP carries CRLF line ends; readers and tests expect plain newlines.
    return subject, text.replace("\r\n", "\n")


class MailStore:
    """The received messages, oldest first; safe to use from any thread."""

    def __init__(self, on_message: Callable[[StoredMail], None] | None = None) -> None:
        self._messages: list[StoredMail] = []
        self._changed = threading.Condition()
        self._ids = itertools.count(1)
        self._on_message = on_message

    def add(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> StoredMail:
        subject, text = parse_mail(raw)
        with self._changed:
            mail = StoredMail(
                id=next(self._ids),
                received_at=datetime.now(UTC),
                mail_from=mail_from,
                rcpt_tos=tuple(rcpt_tos),
                subject=subject,
                text=text,
                raw=raw,
            )
            self._messages.append(mail)
            self._changed.notify_all()
        if self._on_message:
            self._on_message(mail)
        return mail

    def messages(self, to: str | None = None) -> list[StoredMail]:
        """A snapshot in arrival order, only those for recipient `to` when given."""
        with self._changed:
            snapshot = list(self._messages)
        return [m for m in snapshot if to is None or m.is_for(to)]

    def get(self, mail_id: int) -> StoredMail | None:
        with self._changed:
            return next((m for m in self._messages if m.id == mail_id), None)

    def clear(self) -> int:
        with self._changed:
            count = len(self._messages)
            self._messages.clear()
            self._changed.notify_all()
            return count

    def wait_for(
        self, predicate: Callable[[list[StoredMail]], bool], timeout: float = 10.0
    ) -> list[StoredMail]:
        """Block until `predicate(messages)` holds (returns them) or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._messages)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching mail within {timeout}s ({len(self._messages)} received)")
                self._changed.wait(remaining)
            return list(self._messages)


class StoringHandler:
    """aiosmtpd handler: every message received is added to the store, then accepted; a
    recipient in `refused` is refused for good (550), as a server does for a mailbox that
    does not exist."""

    def __init__(self, store: MailStore) -> None:
        self.store = store
        self.refused: set[str] = set()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        if address.lower() in self.refused:
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", errors="replace")
        self.store.add(envelope.mail_from or "", list(envelope.rcpt_tos), raw)
        return "250 Message accepted for delivery"



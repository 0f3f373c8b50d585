"""Talking to the SMTP server: connections kept open between emails, the message as it goes
out, and which failures are a refusal of the email itself rather than the server being away."""

from __future__ import annotations

from email.charset import QP, Charset
from email.header import Header
from email.mime.text import MIMEText

import aiosmtplib
from contacts_shared.settings import NotifierSettings

from contacts_notifier.domain import Email

# Failures worth another try: the server away, slow, or saying "later".
SEND_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)

# Text that is not plain ASCII goes as UTF-8, quoted-printable (stays readable in the source).
_UTF8_QUOTED_PRINTABLE = Charset("utf-8")
_UTF8_QUOTED_PRINTABLE.body_encoding = QP


def refusal_code(exc: BaseException) -> int | None:
    """The SMTP reply code when the server refused this email for good (5xx to its recipient or
    its content), else None: the server away, a 4xx "try later", or a refusal of our own sender
    or login, which says the configuration is wrong and every email waits for it to be fixed."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        return min(codes) if codes and all(500 <= code < 600 for code in codes) else None
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError) and 500 <= exc.code < 600:
        return exc.code
    return None


class SmtpClient:
    """Sends one email at a time over a connection kept open between them (connecting, EHLO
    and QUIT cost more than a send); after a failure the next email starts on a fresh one."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self._idle: list[aiosmtplib.SMTP] = []

    def take(self) -> aiosmtplib.SMTP | None:
        return self._idle.pop() if self._idle else None

    def give_back(self, smtp: aiosmtplib.SMTP | None) -> None:
        if smtp is not None and smtp.is_connected:
            self._idle.append(smtp)

    async def send(self, smtp: aiosmtplib.SMTP | None, to: str, message_id: str, request_id: str, email: Email) -> aiosmtplib.SMTP:
        """Deliver over `smtp` if it is still open, else over a new connection; returns the
        connection used. A kept connection the server dropped meanwhile is replaced once; on any
        other failure the connection is closed and the error raised."""
        message = self._message(to, message_id, request_id, email)
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.send_message(message)
                return smtp
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                smtp.close()
            except BaseException:
                smtp.close()
                raise
        smtp = await self._connect()
        try:
            await smtp.send_message(message)
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

    def _message(self, to: str, message_id: str, request_id: str, email: Email) -> MIMEText:
        # The compat32 classes: the default policy's header objects made building and
        # flattening an email cost 5 times as much CPU (0.56 against 0.11 ms; bench/README.md).
        message = MIMEText(email.body, "plain", "us-ascii" if email.body.isascii() else _UTF8_QUOTED_PRINTABLE)
        message["From"] = self.settings.mail_from
        message["To"] = to
        message["Subject"] = email.subject if email.subject.isascii() else Header(email.subject, "utf-8")
        message["Content-Language"] = email.language  # RFC 3282: the language it is written in
        # Stable per mail row, so a receiving system can recognise a retry.
        message["Message-ID"] = message_id
        message["X-Contacts-Request-Id"] = request_id
        return message

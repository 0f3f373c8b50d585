"""The mail sink receives real SMTP and shows it through its HTTP inbox."""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator
from email.message import EmailMessage

import httpx
import pytest
from contacts_tools.mailsink import MailSink
from support import free_port


@pytest.fixture
def sink() -> Iterator[MailSink]:
    sink = MailSink("127.0.0.1", free_port(), free_port())
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def inbox(sink: MailSink) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sink.inbox_url, timeout=5) as client:
        yield client


def send(sink: MailSink, to: list[str], subject: str, text: str, html: str | None = None) -> None:
    """Send through real SMTP; the sink has stored the mail when this returns (it replies 250 after)."""
    message = EmailMessage()
    message["From"] = "Contacts <contacts@example.test>"
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    with smtplib.SMTP(sink.smtp_host, sink.smtp_port, timeout=5) as smtp:
        smtp.send_message(message)


def test_a_mail_reads_back_decoded_through_the_api(sink: MailSink, inbox: httpx.Client) -> None:
    text = "Bonjour Zoé,\nconfirm here: http://127.0.0.1:8000/requests/1?token=abc\n"
    send(sink, ["owner@shop-example.test", "tech@web-agency.test"], "Changement de contact – é", text, "<p>html</p>")

    response = inbox.get("/api/messages")

    assert response.status_code == 200
    (mail,) = response.json()
    assert mail["mail_from"] == "contacts@example.test"
    assert mail["rcpt_tos"] == ["owner@shop-example.test", "tech@web-agency.test"]
    assert mail["subject"] == "Changement de contact – é"
    assert mail["text"] == text  # the plain part, transfer encoding undone, newlines plain
    assert mail["received_at"].endswith("+00:00")
    detail = inbox.get(f"/api/messages/{mail['id']}").json()
    assert "Subject:" in detail["raw"] and detail["text"] == text


def test_the_store_is_readable_in_process_too(sink: MailSink) -> None:
    send(sink, ["a@example.test"], "first", "one")
    send(sink, ["b@example.test"], "second", "two")

    assert [m.subject for m in sink.store.messages()] == ["first", "second"]
    assert [m.text for m in sink.store.messages(to="B@example.test")] == ["two\n"]


def test_messages_filter_by_recipient(sink: MailSink, inbox: httpx.Client) -> None:
    send(sink, ["owner@shop-example.test"], "for the owner", "hello")
    send(sink, ["webmaster@shop-example.test", "owner@shop-example.test"], "for both", "hello")
    send(sink, ["webmaster@shop-example.test"], "for the webmaster", "hello")

    subjects = [m["subject"] for m in inbox.get("/api/messages", params={"to": "owner@shop-example.test"}).json()]

    assert subjects == ["for the owner", "for both"]


def test_the_inbox_page_lists_newest_first_and_escapes(sink: MailSink, inbox: httpx.Client) -> None:
    send(sink, ["a@example.test"], "older", "first")
    send(sink, ["a@example.test"], "newer <script>alert(1)</script>", "see https://example.test/x?a=1&b=2")

    page = inbox.get("/")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>alert(1)</script>" not in page.text
    assert "newer &lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.text.index("newer") < page.text.index("older")
    assert '<a href="https://example.test/x?a=1&amp;b=2">' in page.text


def test_delete_clears_the_inbox(sink: MailSink, inbox: httpx.Client) -> None:
    send(sink, ["a@example.test"], "one", "1")
    send(sink, ["a@example.test"], "two", "2")

    deleted = inbox.delete("/api/messages")

    assert deleted.status_code == 200 and deleted.json() == {"deleted": 2}
    assert inbox.get("/api/messages").json() == []
    assert "No mail yet" in inbox.get("/").text


def test_unknown_paths_and_messages_are_404(inbox: httpx.Client) -> None:
    assert inbox.get("/api/messages/999").status_code == 404
    assert inbox.get("/nowhere").status_code == 404


def test_wait_for_wakes_up_when_mail_arrives(sink: MailSink) -> None:
    sender = threading.Thread(target=send, args=(sink, ["late@example.test"], "late", "x"))
    sender.start()
    try:
        messages = sink.store.wait_for(lambda ms: any(m.is_for("late@example.test") for m in ms), timeout=10)
    finally:
        sender.join()
    assert [m.subject for m in messages] == ["late"]


def test_wait_for_gives_up_at_its_deadline(sink: MailSink) -> None:
    with pytest.raises(TimeoutError):
        sink.store.wait_for(lambda ms: bool(ms), timeout=0.05)


def test_a_taken_port_fails_start_and_leaves_nothing_listening() -> None:
    inbox_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            MailSink("127.0.0.1", taken.getsockname()[1], inbox_port).start()
    # The inbox, started first, was closed again: its port is free for the next sink.
    with MailSink("127.0.0.1", free_port(), inbox_port) as sink, httpx.Client(base_url=sink.inbox_url) as inbox:
        assert inbox.get("/api/messages").json() == []


def test_parse_mail_unfolds_long_subjects_and_skips_attachments() -> None:
    from contacts_tools.mail_store import parse_mail

    message = EmailMessage()
    message["Subject"] = "A long subject that the generator has to fold over lines " * 3
    message.set_content("the text part\r\n")
    message.add_attachment("not this one", filename="notes.txt")

    subject, text = parse_mail(message.as_bytes())

    assert subject == "A long subject that the generator has to fold over lines " * 3
    assert text == "the text part\n"


async def test_the_sink_can_serve_smtp_in_the_callers_event_loop() -> None:
    import aiosmtplib

    arrived = []
    sink = MailSink("127.0.0.1", free_port(), free_port(), on_message=arrived.append)
    await sink.start_in_this_loop()
    try:
        await aiosmtplib.send(
            "From: a@example.test\r\nTo: b@example.test\r\nSubject: in the loop\r\n\r\nhello\r\n",
            sender="a@example.test",
            recipients=["b@example.test"],
            hostname=sink.smtp_host,
            port=sink.smtp_port,
        )
    finally:
        sink.stop()

    assert [(m.subject, m.text, m.rcpt_tos) for m in arrived] == [("in the loop", "hello\n", ("b@example.test",))]

"""A local SMTP sink with a web inbox, for development and tests.

It accepts every message over SMTP (aiosmtpd), keeps it in memory (`mail_store`) and shows it:

- `GET /`                    an HTML page listing the messages, newest first;
- `GET /api/messages`        the messages as JSON, in arrival order (`?to=addr` filters on recipients);
- `GET /api/messages/{id}`   one message, with its raw source;
- `DELETE /api/messages`     forgets every message.

Nothing is ever relayed: a sink is where mail goes to be read by a developer or a test.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import uvloop
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from contacts_tools.mail_store import MailStore, StoredMail, StoringHandler

# --- the web inbox --------------------------------------------------------------------------------

_URL = re.compile(r"https?://[^\s<>\"']+")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Mail sink ({count})</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }}
 header {{ display: flex; justify-content: space-between; align-items: baseline; }}
 article {{ border: 1px solid #ccc; border-radius: 6px; margin: 1rem 0; padding: .5rem 1rem; }}
 h2 {{ font-size: 1.1rem; margin: .3rem 0; }}
 dl {{ display: grid; grid-template-columns: max-content auto; gap: 0 1rem; margin: .3rem 0; color: #555; font-size: .9rem; }}
 dt {{ font-weight: 600; }} dd {{ margin: 0; }}
 pre {{ white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: .7rem; border-radius: 4px; }}
 .empty {{ color: #777; }}
</style></head>
<body>
<header><h1>Mail sink</h1>
<span>{count} message(s) &middot; SMTP on {smtp} &middot; <a href="/api/messages">JSON</a>
 &middot; <button id="clear">Delete all</button></span></header>
{articles}
<script>
 document.getElementById("clear").onclick = () =>
   fetch("/api/messages", {{method: "DELETE"}}).then(() => location.reload());
 // Reload when new mail arrives, without disturbing a reader while nothing changes.
 setInterval(() => fetch("/api/messages").then(r => r.json())
   .then(list => {{ if (list.length !== {count}) location.reload(); }}), 2000);
</script>
</body></html>
"""


def _linkified(text: str) -> str:
    """Escaped text with its URLs clickable (the confirm links in the notifier's mail)."""
    parts: list[str] = []
    position = 0
    for match in _URL.finditer(text):
        parts.append(html.escape(text[position : match.start()]))
        url = html.escape(match.group(0))
        parts.append(f'<a href="{url}">{url}</a>')
        position = match.end()
    parts.append(html.escape(text[position:]))
    return "".join(parts)


def render_inbox(messages: list[StoredMail], smtp_address: str) -> str:
    articles = [
        f"<article><h2>{html.escape(m.subject) or '(no subject)'}</h2><dl>"
        f"<dt>To</dt><dd>{html.escape(', '.join(m.rcpt_tos))}</dd>"
        f"<dt>From</dt><dd>{html.escape(m.mail_from)}</dd>"
        f"<dt>Received</dt><dd>{m.received_at:%Y-%m-%d %H:%M:%S} UTC (#{m.id})</dd></dl>"
        f"<pre>{_linkified(m.text) if m.text else '(no plain-text part)'}</pre></article>"
        for m in reversed(messages)
    ]
    body = "\n".join(articles) or '<p class="empty">No mail yet.</p>'
    return _PAGE.format(count=len(messages), smtp=html.escape(smtp_address), articles=body)


class InboxServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: MailStore, smtp_address: str) -> None:
        super().__init__(address, InboxRequestHandler)
        self.store = store
        self.smtp_address = smtp_address


class InboxRequestHandler(BaseHTTPRequestHandler):
    server: InboxServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        store = self.server.store
        if url.path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", render_inbox(store.messages(), self.server.smtp_address))
        elif url.path == "/api/messages":
            to = parse_qs(url.query).get("to", [None])[0]
            self._send_json(HTTPStatus.OK, [m.summary() for m in store.messages(to)])
        elif (match := re.fullmatch(r"/api/messages/(\d+)", url.path)) and (mail := store.get(int(match[1]))):
            self._send_json(HTTPStatus.OK, mail.detail())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"detail": "not found"})

    def do_DELETE(self) -> None:
        if urlsplit(self.path).path == "/api/messages":
            self._send_json(HTTPStatus.OK, {"deleted": self.server.store.clear()})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"detail": "not found"})

    def _send_json(self, status: HTTPStatus, value: Any) -> None:
        self._send(status, "application/json", json.dumps(value, ensure_ascii=False))

    def _send(self, status: HTTPStatus, content_type: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the inbox polls itself every few seconds: access logs would drown the dev output


# --- the sink: SMTP and inbox together ------------------------------------------------------------


class MailSink:
    """SMTP on `smtp_host:smtp_port` and the web inbox on `smtp_host:http_port`, in threads."""

    def __init__(
        self,
        smtp_host: str = "127.0.0.1",
        smtp_port: int = 1025,
        http_port: int = 8025,
        *,
        on_message: Callable[[StoredMail], None] | None = None,
    ) -> None:
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.http_port = http_port
        self.store = MailStore(on_message)
        self._handler = StoringHandler(self.store)
        self._controller: Controller | None = None  # SMTP in a thread of its own (`start`)
        self._server: asyncio.Server | None = None  # SMTP served by the caller's loop instead
        self._inbox: InboxServer | None = None
        self._inbox_thread: threading.Thread | None = None

    def refuse(self, address: str) -> None:
        """From now on, refuse mail to `address` for good (550)."""
        self._handler.refused.add(address.lower())

    @property
    def inbox_url(self) -> str:
        return f"http://{self.smtp_host}:{self.http_port}"

    def start(self) -> None:
        """Listen on both ports; raises OSError when one is taken (nothing is left running)."""
        self._start_inbox()
        try:
            ensure_can_listen(self.smtp_host, self.smtp_port)
            # On uvloop, like the services: the sink's socket writes (every SMTP reply) cost a
            # third as much CPU as on asyncio's loop, and under load it shares the machine with them.
            self._controller = Controller(
                self._handler, hostname=self.smtp_host, port=self.smtp_port, loop=uvloop.new_event_loop()
            )
            self._controller.start()
        except BaseException:
            self._stop_inbox()
            raise

    async def start_in_this_loop(self) -> None:
        """Like `start`, but SMTP is served by the running event loop rather than a thread of
        its own: for a caller that lives in that loop (the benchmark), arrivals then cost no
        thread hand-over, and two busy threads do not take turns at one interpreter lock."""
        self._start_inbox()
        try:
            loop = asyncio.get_running_loop()
            handler = self._handler
            self._server = await loop.create_server(
                lambda: SMTP(handler, hostname=self.smtp_host, loop=loop), self.smtp_host, self.smtp_port
            )
        except BaseException:
            self._stop_inbox()
            raise

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # the loop closes the connections when it next runs
            self._server = None
        if self._controller is not None:
            try:
                self._controller.stop()
            except AssertionError:
                pass  # aiosmtpd asserts that it was started: a start that failed left nothing to stop
            self._controller = None
        self._stop_inbox()

    def _start_inbox(self) -> None:
        self._inbox = InboxServer((self.smtp_host, self.http_port), self.store, f"{self.smtp_host}:{self.smtp_port}")
        # A short poll interval so that stop() returns promptly (shutdown waits for the next poll).
        self._inbox_thread = threading.Thread(
            target=self._inbox.serve_forever, kwargs={"poll_interval": 0.05}, name="mailsink-inbox", daemon=True
        )
        self._inbox_thread.start()

    def _stop_inbox(self) -> None:
        if self._inbox is not None:
            self._inbox.shutdown()
            self._inbox.server_close()
            self._inbox = None
        if self._inbox_thread is not None:
            self._inbox_thread.join()
            self._inbox_thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def ensure_can_listen(host: str, port: int) -> None:
    """Raise OSError now if the port is taken: aiosmtpd would only time out after seconds."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # Same option as asyncio's server, so a port in TIME_WAIT is not mistaken for a taken one.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def announce(mail: StoredMail) -> None:
    """One line per received message, for a developer watching the terminal."""
    print(f"mail #{mail.id} to {', '.join(mail.rcpt_tos)}: {mail.subject}", flush=True)


def run_until_interrupted(smtp_host: str = "127.0.0.1", smtp_port: int = 1025, http_port: int = 8025) -> int:
    """Run the sink in the foreground until Ctrl-C or SIGTERM; returns the exit status."""
    sink = MailSink(smtp_host, smtp_port, http_port, on_message=announce)
    try:
        sink.start()
    except OSError as exc:
        print(f"contacts mailsink: cannot listen on {smtp_host} ports {smtp_port}/{http_port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"SMTP sink on {smtp_host}:{smtp_port}; inbox at {sink.inbox_url} (Ctrl-C to stop)", flush=True)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sink.stop()
    print("mail sink stopped", flush=True)
    return 0

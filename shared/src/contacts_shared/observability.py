"""Prometheus metrics, and the health/metrics HTTP server of the services without an API.

Counters and histograms count what this process did (Prometheus sums the replicas). Gauges of
shared state (requests by state, outbox backlog, dead-letter depth) are read from PostgreSQL and
RabbitMQ when scraped, by the `refreshers` a service registers, so every replica reports the
same value (aggregate them with max, not sum).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

log = structlog.get_logger("contacts.observability")

# No `*_created` series: Prometheus does not need them and they double the exposition.
disable_created_metrics()

MESSAGES_HANDLED = Counter(
    "contacts_messages_handled_total",
    "Messages taken from this service's queue, by routing key and outcome (handled, duplicate, nothing_to_do, retried, dead_lettered).",
    ["routing_key", "outcome"],
)
MESSAGE_SECONDS = Histogram(
    "contacts_message_handling_seconds",
    "Time to handle one message (its transaction included).",
    ["routing_key"],
)
OUTBOX_PUBLISHED = Counter("contacts_outbox_published_total", "Messages the outbox relay published.")
MESSAGES_UNROUTABLE = Counter(
    "contacts_messages_unroutable_total",
    "Messages this process published that RabbitMQ returned as unroutable (no queue bound to their routing key),"
    " by routing key. An outbox row stays in the outbox and is retried; a token announcement fails and its email"
    " waits; contact_change.completed, which only other systems consume, is not retried.",
    ["routing_key"],
)
OUTBOX_BACKLOG = Gauge("contacts_outbox_backlog", "Messages in this service's outbox not yet published.")
DEAD_LETTERS = Gauge("contacts_dead_letter_queue_depth", "Messages in this service's dead-letter queue.", ["queue"])
# Open states only (how many ended each way: contacts_request_flow_seconds_count{state}).
REQUESTS_BY_STATE = Gauge("contacts_requests_by_state", "Open contact-change requests in each open state.", ["state"])
FLOW_SECONDS = Histogram(
    "contacts_request_flow_seconds",
    "From submission to the final state of a request, by final state.",
    ["state"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400, 7 * 86400, 14 * 86400),
)
EMAILS_SENT = Counter("contacts_emails_sent_total", "Emails the SMTP server accepted, by kind.", ["kind"])
EMAILS_FAILED = Counter(
    "contacts_emails_failed_total", "Attempts to send an email that failed (each is retried later), by kind.", ["kind"]
)
HTTP_REQUESTS = Counter("contacts_http_requests_total", "HTTP requests served, by method and status.", ["method", "status"])

Refresher = Callable[[], Awaitable[None]]
ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]


async def render_metrics(refreshers: list[Refresher]) -> bytes:
    """The Prometheus exposition, after refreshing the gauges read from shared state.

    A refresher that fails (database away) leaves its gauge at the last value: the scrape
    still answers, and /readyz says what is wrong.
    """
    for refresh in refreshers:
        try:
            await asyncio.wait_for(refresh(), timeout=2)
        except Exception as exc:  # noqa: BLE001
            log.warning("metric refresh failed", reason=f"{type(exc).__name__}: {exc}")
    return generate_latest()


class HealthServer:
    """GET /healthz (alive), /readyz (database and broker reachable: 200 or 503), /metrics.

    A few lines of asyncio instead of a web framework: the consumers have no other HTTP.
    """

    def __init__(self, port: int, ready: ReadyCheck, refreshers: list[Refresher]) -> None:
        self.port = port
        self.ready = ready
        self.refreshers = refreshers
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, host="0.0.0.0", port=self.port)
        log.info("health and metrics server listening", port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing here needs them
            method, path = (request_line.decode("latin-1").split() + ["", ""])[:2]
            status, content_type, body = await self._answer(method, path.split("?", 1)[0])
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/healthz":
            return "200 OK", "application/json", b'{"status": "ok"}'
        if path == "/readyz":
            checks = await self.ready()
            ok = all(checks.values())
            body = json.dumps({"status": "ready" if ok else "not ready", "checks": checks}).encode()
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, await render_metrics(self.refreshers)
        return "404 Not Found", "text/plain", b"not found\n"


class RequestContextMiddleware:
    """ASGI middleware: every log line of an HTTP request carries its `http_request_id` (the
    caller's X-Request-Id if sane, else a new one, echoed in the response), and requests are
    counted. (`request_id` in this system's logs is a contact-change request's id.)"""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 64 and given.replace("-", "").isalnum() else str(uuid.uuid4())
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(http_request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                HTTP_REQUESTS.labels(scope.get("method", ""), str(status)).inc()
                if scope.get("path") not in ("/healthz", "/readyz", "/metrics"):
                    log.info(
                        "http request",
                        method=scope.get("method"),
                        path=scope.get("path"),
                        status=status,
                        seconds=round(time.monotonic() - started, 4),
                    )

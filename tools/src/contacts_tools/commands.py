"""What the `contacts` commands share: their one-line errors, the settings they read, and
publishing messages to the bus as another system would."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from contacts_shared.contracts import MESSAGE_TYPES, Contract, Envelope, envelope_for
from contacts_shared.settings import CommonSettings, load_settings
from pydantic import ValidationError

PROGRAM = "contacts"
SERVICE_PROGRAMS = ("contacts-requests", "contacts-billing-check", "contacts-notifier")
# The services' queues: each must have a consumer before the services count as up, and before
# demo data is published (a message sent while a queue is not yet bound would be dropped).
SERVICE_QUEUES = ("requests", "billing_check", "notifier")
STOP_GRACE_SECONDS = 10.0


class CliError(Exception):
    """Ends the command with one line on stderr and the given exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def masked_url(url: str) -> str:
    """The URL with its password hidden, for error messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def one_line(text: str) -> str:
    return " ".join(text.split())


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem, naming its field, e.g. `field 'zone': Input should be 'EU', 'CA' or 'US'`."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "(data)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return one_line(f"field {field!r}: {message}{more}")


def parse_message_data(routing_key: str, text: str) -> Contract:
    """Validate JSON `data` against the contract of `routing_key`, or raise CliError."""
    model = MESSAGE_TYPES.get(routing_key)
    if model is None:
        raise CliError(f"unknown routing key {routing_key!r}; known: {', '.join(MESSAGE_TYPES)}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"the data must be a JSON object, not {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise CliError(f"invalid {routing_key} data: {describe_validation_error(exc)}") from None


async def publish_all(
    settings: CommonSettings,
    messages: Sequence[Contract],
    on_published: Callable[[Envelope, Contract], None],
    message_id: uuid.UUID | None = None,
) -> None:
    """Publish each message (persistent, confirmed by the broker) to the namespace's exchange."""
    from contacts_shared.bus import exchange_for, new_broker
    from contacts_shared.outbox import publish_envelope

    # The AMQP clients log connection failures on their own; the user gets our one line instead.
    for client in ("aio_pika", "aiormq"):
        logging.getLogger(client).setLevel(logging.CRITICAL)
    broker = new_broker(settings.amqp_url)
    try:
        await broker.connect()
        # Looked up, not declared: an integrating system's user may not configure it (the
        # services declare it when they start).
        exchange = exchange_for(settings.namespace, declare=False)
        await broker.declare_exchange(exchange)
        for message in messages:
            envelope = envelope_for(message, message_id)
            await publish_envelope(broker, exchange, envelope)
            on_published(envelope, message)
    except Exception as exc:  # noqa: BLE001 - whatever the client raises, the user gets one line
        raise CliError(
            f"cannot publish to RabbitMQ at {masked_url(settings.amqp_url)}: {one_line(str(exc)) or type(exc).__name__}",
            status=1,
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await broker.stop()


def common_settings() -> CommonSettings:
    return load_settings(CommonSettings, PROGRAM)

"""Listening to a test's exchange as another system would: every message published on it is kept,
and those the project's services published are checked against the published JSON Schemas.

The `system` fixture starts one `MessageCapture` per test and, at teardown, fails the test if a
service published a message that breaks its contract (docs/schemas/<routing-key>.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import aio_pika
import jsonschema
from contacts_shared.contracts import MalformedMessage, parse_message
from contacts_tools.contract_docs import PRODUCERS
from support import eventually

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


@cache
def validator_for(routing_key: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{routing_key}.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@dataclass(frozen=True)
class Captured:
    routing_key: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class MessageCapture:
    """An exclusive, auto-deleted queue bound with `#` to the exchange, collecting every message."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.messages: list[Captured] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> None:
        """Bind to the exchange (it must exist: the services declare it when they start)."""
        self._connection = await aio_pika.connect(self.amqp_url)
        channel = await self._connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.exchange, routing_key="#")
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.messages.append(Captured(message.routing_key or "", message.body))

    async def stop(self) -> None:
        if self._connection:
            await self._connection.close()

    def bodies(self, routing_key: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.messages if m.routing_key == routing_key]

    async def wait_for(self, routing_key: str, timeout: float = 15.0, **data: Any) -> dict[str, Any]:
        """The first `routing_key` body whose data has the given values (waits for it)."""

        async def found() -> dict[str, Any] | None:
            for body in self.bodies(routing_key):
                if all(body["data"].get(k) == v for k, v in data.items()):
                    return body
            return None

        return await eventually(found, timeout=timeout, what=f"{routing_key} with {data}")

    def contract_violations(self) -> list[str]:
        """What the project's services published that breaks the published contract."""
        problems = []
        for message in self.messages:
            if message.routing_key not in PRODUCERS:
                continue  # published by the test itself, in the role of another system
            where = f"{message.routing_key} {message.body[:300]!r}"
            try:
                body = message.json()
            except ValueError:
                problems.append(f"{where}: not JSON")
                continue
            problems += [
                f"{where}: {'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
                for e in validator_for(message.routing_key).iter_errors(body)
            ]
            try:
                parse_message(message.body, message.routing_key)
            except MalformedMessage as exc:
                problems.append(f"{where}: refused by its consumer: {exc}")
        return problems

    def assert_contracts_kept(self) -> None:
        problems = self.contract_violations()
        assert not problems, "messages published by the services break docs/schemas:\n" + "\n".join(problems)

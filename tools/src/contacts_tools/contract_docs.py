"""The contract documents, generated from the code so they cannot drift from it.

`contacts docs` writes, under `docs/`:
- `asyncapi.yaml`: AsyncAPI 3.0 of every message (exchange, routing keys, who publishes and who
  consumes, payload schemas, examples);
- `openapi.json`: the requests service's HTTP API, from its FastAPI app;
- `schemas/<routing-key>.json`: JSON Schema (draft 2020-12) of one message body, envelope and data;
- `examples/<routing-key>.json`: one valid body of that message.

Why the AsyncAPI document is built here rather than by FastStream's generator: each service has a
single FastStream subscriber on its one queue, taking raw bytes and dispatching by routing key
(so that a bad body becomes a dead letter with a reason). FastStream would describe that as three
untyped channels. The document is assembled instead from what the brokers are built from: the
exchange and queue declarations of `bus` (`exchange_for`, `queue_for`), the services' handler
tables (who consumes which routing key), `MESSAGE_TYPES` and the pydantic models' JSON Schema.
The examples live once, on the models (`json_schema_extra`).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from contacts_shared.bus import (
    dead_letter_queue_for,
    exchange_for,
    queue_for,
)
from contacts_shared.contracts import (
    CURRENT_VERSION,
    MESSAGE_TYPES,
    STATE_CHANGED,
    Envelope,
    state_key,
)
from contacts_shared.handling import by_routing_key
from contacts_shared.retry import MAX_ATTEMPTS
from contacts_shared.settings import CommonSettings
from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import models_json_schema

REGENERATE = "uv run contacts docs"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_VERSION = "3.1.0"
AMQP_BINDING_VERSION = "0.3.0"
# The project's licence (as examples/node-publisher/package.json declares it).
LICENSE = {"name": "MIT", "url": "https://opensource.org/licenses/MIT"}
# The prose writes names as `bus` builds them in any namespace: `{namespace}contacts`...
NAMESPACE = "{namespace}"
# The development broker: the default of CONTACTS_AMQP_URL (`amqp://guest:guest@127.0.0.1:5672/%2f`).
DEV_BROKER = urlsplit(CommonSettings.model_fields["amqp_url"].default)
VHOST = unquote(DEV_BROKER.path.removeprefix("/"))
# Which of the project's services publishes each of its own messages (the rest come from other systems).
PRODUCERS: dict[str, str] = {
    "contact_change.requested": "requests",
    "contact_change.vetted": "billing_check",
    "contact_change.validation_requested": "requests",
    "contact_change.batch_validation_requested": "requests",
    "contact_change.token_issued": "notifier",
    "contact_change.email_failed": "notifier",
    "contact_change.state_changed": "requests",
    "contact_change.completed": "requests",
    "contact_change.support_acted": "requests",
}
# Messages of the project meant for other systems too (they may bind their own queue to them).
FOR_OTHER_SYSTEMS = ("contact_change.state_changed", "contact_change.completed", "contact_change.support_acted")
# The fixed envelope of the examples, so the generated files are stable.
EXAMPLE_OCCURRED_AT = "2026-01-31T12:00:00Z"


def bindings() -> dict[str, dict[str, tuple[str, ...]]]:
    """Routing key -> the services that consume it -> the keys their queue is bound by, read
    from the services' own handler tables."""
    # Imported here: the services depend on this package, not the other way round, and only the
    # `contacts docs` command (run inside the workspace) needs them.
    from contacts_billing_check.handlers import HANDLERS as BILLING_CHECK
    from contacts_notifier.handlers import HANDLERS as NOTIFIER
    from contacts_requests.consumers import HANDLERS as REQUESTS

    tables = {"requests": by_routing_key(REQUESTS), "billing_check": by_routing_key(BILLING_CHECK), "notifier": by_routing_key(NOTIFIER)}
    return {key: {service: table[key].binding_keys for service, table in tables.items() if key in table} for key in MESSAGE_TYPES}


def consumers() -> dict[str, list[str]]:
    """Routing key -> the services that consume it."""
    return {key: list(services) for key, services in bindings().items()}


def bound_keys() -> set[str]:
    """Every key a queue of the services is bound by."""
    return {binding for services in bindings().values() for keys in services.values() for binding in keys}


@cache
def message_model(routing_key: str) -> type[BaseModel]:
    """The whole body of one message type: the envelope with `type` fixed and `data` typed."""
    data_model = MESSAGE_TYPES[routing_key]
    return create_model(
        f"{data_model.__name__}Message",
        __base__=Envelope,
        __doc__=f"A `{routing_key}` message: the envelope and its data.",
        message_id=(uuid.UUID, Field(description="unique per message; consumers drop a message_id seen before")),
        type=(Literal[routing_key], Field(description="the routing key")),  # type: ignore[valid-type]
        version=(
            Literal[CURRENT_VERSION],  # type: ignore[valid-type]
            Field(description="contract version; 1 until a breaking change (see docs/integration.md); another is dead-lettered"),
        ),
        data=(data_model, ...),
    )


def message_schema(routing_key: str) -> dict[str, Any]:
    """Self-contained JSON Schema of one message body, as published to docs/schemas/."""
    schema = message_model(routing_key).model_json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"{routing_key}.json", **schema}


def message_example(routing_key: str) -> dict[str, Any]:
    """One valid body: a fixed envelope around the example declared on the data model."""
    # From the model's declaration rather than its JSON Schema, which sorts the keys.
    examples = MESSAGE_TYPES[routing_key].model_config["json_schema_extra"]["examples"]  # type: ignore[index]
    return {
        "message_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"contacts:example:{routing_key}")),
        "type": routing_key,
        "version": CURRENT_VERSION,
        "occurred_at": EXAMPLE_OCCURRED_AT,
        "data": examples[0],
    }


def _publisher(routing_key: str) -> str:
    producer = PRODUCERS.get(routing_key)
    return f"the {producer} service" if producer else "other systems"


def _servers() -> dict[str, Any]:
    return {
        "local": {
            "host": DEV_BROKER.netloc.rpartition("@")[2],
            "pathname": DEV_BROKER.path,
            "protocol": DEV_BROKER.scheme,
            "protocolVersion": "0.9.1",
            "title": "Local development broker",
            "description": (
                f"The RabbitMQ of `./scripts/dev` and the tests (user `{DEV_BROKER.username}`, password "
                f"`{DEV_BROKER.password}`); the path is the virtual host `{VHOST}`, URL-encoded. Elsewhere the "
                "deployment's CONTACTS_AMQP_URL names the broker, virtual host and user (`amqps://` with TLS); "
                "give each system its own user (docs/integration.md)."
            ),
            "security": [{"$ref": "#/components/securitySchemes/userPassword"}],
        }
    }


SECURITY_SCHEMES = {
    "userPassword": {
        "type": "userPassword",
        "description": "A RabbitMQ user and its password (AMQP PLAIN), as given in the AMQP URL.",
    }
}


def asyncapi_document(namespace: str = "") -> dict[str, Any]:
    # Bindings name things as they are in `namespace`; the prose as they are in any namespace.
    exchange, any_exchange = exchange_for(namespace), exchange_for(NAMESPACE).name
    bound_by = bindings()
    _, definitions = models_json_schema(
        [(message_model(key), "validation") for key in MESSAGE_TYPES], ref_template="#/components/schemas/{model}"
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for key, data_model in MESSAGE_TYPES.items():
        readers = list(bound_by[key])
        audience = ", ".join(readers) + (" and other systems" if key in FOR_OTHER_SYSTEMS else "")
        messages[key] = {
            "name": key,
            "title": key,
            "summary": f"Published by {_publisher(key)}; consumed by {audience}.",
            "description": (data_model.__doc__ or "").strip() or None,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{message_model(key).__name__}"},
            "bindings": {"amqp": {"messageType": key, "bindingVersion": AMQP_BINDING_VERSION}},
            "examples": [{"name": key, "payload": message_example(key)}],
        }
        if messages[key]["description"] is None:
            del messages[key]["description"]
        channels[key] = {
            "address": key,
            "title": key,
            "description": f"Routing key `{key}` on the topic exchange `{any_exchange}`."
            + (
                f" Also routed by its state, `{state_key('<state>')}` (in the `BCC` header, which consumers "
                "do not see): a queue bound by such keys gets those states only."
                if key == STATE_CHANGED
                else ""
            ),
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange.name,
                        "type": exchange.type.value,
                        "durable": exchange.durable,
                        "autoDelete": exchange.auto_delete,
                        "vhost": VHOST,
                    },
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
        channel_message = [{"$ref": f"#/channels/{key}/messages/{key}"}]
        if key in PRODUCERS:
            operations[f"{PRODUCERS[key]}.publishes.{key}"] = {
                "action": "send",
                "title": f"{PRODUCERS[key]} publishes {key}",
                "description": "Published from the service's transactional outbox, persistent, with publisher confirms.",
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": channel_message,
                "bindings": {
                    "amqp": {"deliveryMode": 2, "mandatory": False, "bindingVersion": AMQP_BINDING_VERSION}
                },
            }
        for service in readers:
            queue, dlq = queue_for(NAMESPACE, service), dead_letter_queue_for(NAMESPACE, service)
            operations[f"{service}.consumes.{key}"] = {
                "action": "receive",
                "title": f"{service} consumes {key}",
                "description": (
                    f"From the quorum queue `{queue.name}`, bound to {', '.join(f'`{k}`' for k in bound_by[key][service])}. Acknowledged after the "
                    f"handler's transaction commits; a message seen before (same message_id) is acknowledged "
                    f"and ignored; an unparseable one, or one failing {MAX_ATTEMPTS} times, goes to "
                    f"`{dlq.name}` with the reason in the header `x-reason`."
                ),
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": channel_message,
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Contacts messages",
            "version": str(CURRENT_VERSION),
            "description": (
                "Every message of the contacts services and of the systems that feed them, on one durable "
                f"topic exchange `{any_exchange}`, where `{NAMESPACE}` is CONTACTS_NAMESPACE (empty by default, "
                f"the exchange then being `{exchange_for('').name}`). Every body is JSON: an envelope "
                "(message_id, type = routing key, version, occurred_at) around `data`. Unknown fields are "
                "ignored. How to connect: docs/integration.md. "
                f"Generated from the code by `{REGENERATE}`; do not edit."
            ),
            "license": LICENSE,
        },
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": definitions["$defs"],
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def openapi_document() -> dict[str, Any]:
    from contacts_requests.api import create_api

    # The document depends only on the routes; no database is touched to build it.
    app = create_api(pool=None, jwt_secret="unused-for-the-document", request_ttl=timedelta(days=14))  # type: ignore[arg-type]
    return app.openapi()


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=110)


def render() -> dict[str, str]:
    """Every generated file: path relative to docs/ -> its text."""
    files = {
        "asyncapi.yaml": f"# Generated by `{REGENERATE}` from the code; do not edit.\n" + _yaml(asyncapi_document()),
        "openapi.json": _json(openapi_document()),
    }
    for key in MESSAGE_TYPES:
        files[f"schemas/{key}.json"] = _json(message_schema(key))
        files[f"examples/{key}.json"] = _json(message_example(key))
    return files


def _leftovers(docs_dir: Path, expected: dict[str, str]) -> list[str]:
    # A schema or example of a routing key that no longer exists.
    return [
        f"{folder}/{path.name}"
        for folder in ("schemas", "examples")
        for path in sorted((docs_dir / folder).glob("*.json"))
        if f"{folder}/{path.name}" not in expected
    ]


def stale(docs_dir: Path) -> list[str]:
    """The generated files that are missing, differ from what the code generates, or are left over."""
    expected = render()
    differing = [
        name for name, text in expected.items() if not (docs_dir / name).exists() or (docs_dir / name).read_text() != text
    ]
    return differing + _leftovers(docs_dir, expected)


def write(docs_dir: Path) -> list[str]:
    """Bring every generated file under `docs_dir` up to date; returns those changed or removed."""
    expected = render()
    changed = stale(docs_dir)
    for name in changed:
        path = docs_dir / name
        if name in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected[name])
        else:
            path.unlink()
    return changed

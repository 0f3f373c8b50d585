"""The contract documents match the code, and the code accepts what the documents promise.

The published JSON Schemas and examples are what other systems code against: each example is
valid against its schema and accepted by the consuming service's parser; an older producer's
message (without the optional fields added since) and a newer one's (with fields we do not know
yet) are both accepted.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from contacts_shared.contracts import MESSAGE_TYPES, MalformedMessage, parse_message
from contacts_tools import contract_docs

DOCS = Path(__file__).resolve().parents[2] / "docs"
KEYS = list(MESSAGE_TYPES)


def schema_of(routing_key: str) -> dict[str, Any]:
    return json.loads((DOCS / "schemas" / f"{routing_key}.json").read_text())


def example_of(routing_key: str) -> dict[str, Any]:
    return json.loads((DOCS / "examples" / f"{routing_key}.json").read_text())


def schema_errors(routing_key: str, body: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema_of(routing_key), format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def accepted(routing_key: str, body: dict[str, Any]) -> Any:
    """The typed data the consuming service gets, or MalformedMessage."""
    _, data = parse_message(json.dumps(body).encode(), routing_key)
    return data


def test_documents_are_up_to_date_with_the_code() -> None:
    stale = contract_docs.stale(DOCS)
    assert not stale, (
        f"docs/ differs from what the code generates: {', '.join(stale)}. "
        f"Regenerate with `{contract_docs.REGENERATE}` and commit the result."
    )


def test_every_message_has_a_schema_an_example_and_a_consumer_or_an_audience() -> None:
    consumers = contract_docs.consumers()
    for key in KEYS:
        assert (DOCS / "schemas" / f"{key}.json").exists()
        assert (DOCS / "examples" / f"{key}.json").exists()
        assert consumers[key] or key in contract_docs.FOR_OTHER_SYSTEMS, f"nobody consumes {key}"
    assert set(contract_docs.PRODUCERS) <= set(KEYS)


def test_asyncapi_document_references_resolve() -> None:
    document = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert document["asyncapi"].startswith("3.")
    assert set(document["channels"]) == set(KEYS)

    def resolve(pointer: str) -> Any:
        node: Any = document
        for part in pointer.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for key, message in document["components"]["messages"].items():
        payload_schema = resolve(message["payload"]["$ref"])
        assert payload_schema["properties"]["type"]["const"] == key
        assert message["examples"][0]["payload"] == example_of(key)


@pytest.mark.parametrize("routing_key", KEYS)
def test_example_is_valid_and_accepted_by_the_consumer(routing_key: str) -> None:
    example = example_of(routing_key)
    assert schema_errors(routing_key, example) == []
    data = accepted(routing_key, example)
    assert isinstance(data, MESSAGE_TYPES[routing_key])


def _optional_fields(routing_key: str) -> list[str]:
    model = MESSAGE_TYPES[routing_key]
    return [field.alias or name for name, field in model.model_fields.items() if not field.is_required()]


@pytest.mark.parametrize("routing_key", [k for k in KEYS if _optional_fields(k)])
def test_message_from_an_older_producer_without_optional_fields_is_accepted(routing_key: str) -> None:
    """Fields added later are optional: a producer that predates them still gets through."""
    older = example_of(routing_key)
    for name in _optional_fields(routing_key):
        older["data"].pop(name, None)
    assert schema_errors(routing_key, older) == []
    accepted(routing_key, older)


def test_state_changed_before_idempotency_key_was_added_is_accepted() -> None:
    older = example_of("contact_change.state_changed")
    del older["data"]["idempotency_key"]  # what version 1 producers sent before the field existed
    assert accepted("contact_change.state_changed", older).idempotency_key is None


@pytest.mark.parametrize("routing_key", KEYS)
def test_unknown_extra_fields_are_ignored(routing_key: str) -> None:
    """A newer producer may add fields before consumers know them."""
    newer = copy.deepcopy(example_of(routing_key))
    newer["trace_id"] = "4bf92f3577b34da6"
    newer["data"]["added_in_a_later_release"] = {"anything": [1, 2, 3]}
    assert schema_errors(routing_key, newer) == []
    data = accepted(routing_key, newer)
    assert "added_in_a_later_release" not in data.model_dump()


@pytest.mark.parametrize(
    ("routing_key", "path", "value"),
    [
        ("account.upserted", ("data", "zone"), "MARS"),
        ("account.upserted", ("data", "nic"), "not a nic"),
        ("service.upserted", ("data", "service"), ""),
        ("invoice.issued", ("data", "amount"), "12,50"),
        ("contact_change.submit", ("data", "changes"), {}),
        ("contact_change.submit", ("data", "idempotency_key"), ""),
        ("contact_change.completed", ("data", "request_id"), "not-a-uuid"),
        ("contact_change.state_changed", ("data", "state"), "lost"),
        ("account.deleted", ("message_id",), "not-a-uuid"),
        ("account.deleted", ("type",), "account.upserted"),
    ],
)
def test_schema_and_consumer_refuse_the_same_invalid_message(routing_key: str, path: tuple[str, ...], value: Any) -> None:
    body = copy.deepcopy(example_of(routing_key))
    node = body
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    assert schema_errors(routing_key, body), f"the schema lets {path}={value!r} through"
    with pytest.raises(MalformedMessage):
        accepted(routing_key, body)

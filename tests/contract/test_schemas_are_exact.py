"""The published JSON Schemas are no looser than the services: a body a service would dead-letter
is refused by its schema too (with formats checked, as docs/integration.md's recipe does), so a
publisher that validates before sending never has a message dead-lettered for its shape.

The bad bodies are made from each routing key's example: every envelope field and every field
of `data` removed, nulled, given the wrong type or a value out of its format, and the known traps
of `contact_change.submit`'s `changes`."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from contacts_shared.contracts import (
    MESSAGE_TYPES,
    MalformedMessage,
    envelope_for,
    parse_message,
)
from contacts_tools.contract_docs import message_example

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
WRONG_VALUES: list[Any] = [
    None,
    42,
    [],
    {},
    "",
    "not a NIC handle, a date or a UUID",
    "2026-01-31T12:00:00",
]


def _service_accepts(routing_key: str, body: Any) -> bool:
    try:
        parse_message(json.dumps(body).encode(), routing_key)
    except MalformedMessage:
        return False
    return True


def _validator(routing_key: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{routing_key}.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key or index inside `value`, depth first."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        yield (*prefix, key)
        yield from _paths(inner, (*prefix, key))


def _with(body: Any, path: tuple[Any, ...], value: Any = ..., *, remove: bool = False) -> Any:
    changed = copy.deepcopy(body)
    *parents, last = path
    target = changed
    for key in parents:
        target = target[key]
    if remove:
        del target[last]
    else:
        target[last] = value
    return changed


def bad_bodies(routing_key: str) -> Iterator[tuple[str, Any]]:
    example = message_example(routing_key)
    for path in _paths(example):
        name = ".".join(map(str, path))
        if isinstance(path[-1], str):
            yield f"{name} missing", _with(example, path, remove=True)
        for wrong in WRONG_VALUES:
            yield f"{name} = {wrong!r}", _with(example, path, wrong)
    yield (
        "type of another message",
        {
            **example,
            "type": "account.deleted" if routing_key != "account.deleted" else "invoice.paid",
        },
    )
    yield "version 0", {**example, "version": 0}
    yield "body not an object", [example]
    if routing_key == "contact_change.submit":
        for changes in (
            {"admin": None},
            {"owner": "aa11111-ovh"},
            {"tech": "bb22222-ovh", "owner": "aa11111-ovh"},
            {},
        ):
            yield f"changes = {changes}", _with(example, ("data", "changes"), changes)


@pytest.mark.parametrize("routing_key", sorted(MESSAGE_TYPES))
def test_the_schema_refuses_every_body_the_service_refuses(routing_key: str) -> None:
    validator = _validator(routing_key)
    looser = [
        name
        for name, body in bad_bodies(routing_key)
        if not _service_accepts(routing_key, body) and validator.is_valid(body)
    ]
    assert not looser, f"docs/schemas/{routing_key}.json accepts what the service dead-letters: {looser}"


@pytest.mark.parametrize("routing_key", sorted(MESSAGE_TYPES))
def test_the_example_passes_both(routing_key: str) -> None:
    example = message_example(routing_key)
    assert _service_accepts(routing_key, example)
    _validator(routing_key).validate(example)


def test_the_check_is_not_blind() -> None:
    """The bad bodies really are bad for the service, most of them: a generator that produced only
    good bodies would make the test above pass for nothing."""
    bodies = list(bad_bodies("contact_change.submit"))
    refused = [name for name, body in bodies if not _service_accepts("contact_change.submit", body)]
    assert len(refused) > 0.8 * len(bodies)
    for trap in (
        "changes = {'admin': None}",
        "changes = {'owner': 'aa11111-ovh'}",
        "occurred_at = '2026-01-31T12:00:00'",
        "message_id missing",
    ):
        assert trap in refused


@pytest.mark.parametrize("routing_key", sorted(MESSAGE_TYPES))
def test_what_the_project_publishes_passes_both(routing_key: str) -> None:
    """A model serialised as the services and the CLI publish it (`envelope_for`) is accepted by
    the service and by the schema: no `null` where the schema wants a key left out."""
    model = MESSAGE_TYPES[routing_key].model_validate(message_example(routing_key)["data"])
    body = json.loads(envelope_for(model).model_dump_json())
    assert _service_accepts(routing_key, body)
    _validator(routing_key).validate(body)

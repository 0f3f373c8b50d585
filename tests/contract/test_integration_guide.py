"""docs/integration.md can be followed to the letter: its AMQP URLs work with clients that follow
the AMQP URI spec, it names every rule a submission can fail on, and its permission recipe, run
as written in a namespace, gives a system exactly what the guide says (RabbitMQ enforcing it)."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import aio_pika
import aiormq
import jsonschema
import pytest
from contacts_shared.contracts import (
    AccountUpserted,
    ContactChangeVetted,
    Phase,
    Zone,
    envelope_for,
)
from contacts_tools.contract_docs import message_example
from support import ROOT, System, eventually

GUIDE = ROOT / "docs" / "integration.md"
# What a reader copies an AMQP URL from.
URL_SOURCES = [
    ROOT / "README.md",
    ROOT / "docker-compose.yml",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "examples").rglob("*.md")),
    *sorted((ROOT / "examples").rglob("*.mjs")),
    *sorted((ROOT / "examples").rglob("*.sh")),
    ROOT / "shared" / "src" / "contacts_shared" / "settings.py",
    ROOT / "tools" / "src" / "contacts_tools" / "cli.py",
]
# An AMQP URL whose path is a bare `/`: the vhost "" to amqp-tools and the Java and .NET clients.
BARE_SLASH = re.compile(r"amqps?://[^\s'\"`/*]+/(?=[\s'\"`)]|$)", re.MULTILINE)  # `*`: a shell pattern


def test_amqp_urls_name_the_default_vhost() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {match[0]}"
        for path in URL_SOURCES
        if "node_modules" not in path.parts
        for match in BARE_SLASH.finditer(path.read_text())
    ]
    assert not offenders, "write the default vhost as %2f (or leave the path out):\n" + "\n".join(offenders)


def _refusal_titles() -> set[str]:
    """The titles of the refusals a submission can meet, read from the requests domain."""
    domain = ROOT / "services" / "requests" / "src" / "contacts_requests" / "domain.py"
    tree = ast.parse(domain.read_text())
    titles = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef) and function.name in (
            "plan_submission",
            "_plan_one",
            "check_may_change",
            "not_found",
        ):
            for call in ast.walk(function):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Refusal":
                    title = call.args[1]
                    assert isinstance(title, ast.Constant)
                    titles.add(title.value)
    return titles


def test_the_guide_names_every_rule_a_submission_can_fail_on() -> None:
    guide = GUIDE.read_text()
    titles = _refusal_titles()
    assert {
        "Not allowed",
        "Unknown NIC handle",
        "Different zone",
        "A request is already open",
    } <= titles
    missing = [title for title in titles if title not in guide and title != "Not found"]
    assert not missing, f"docs/integration.md does not name these refusals: {missing}"
    for billing_rule in ("unpaid invoice", "no valid payment method"):
        assert billing_rule in guide
    assert "spec section" not in guide, "the guide points to a document outside the repository"


def _recipe() -> str:
    credentials = GUIDE.read_text().split("## Credentials", 1)[1]
    match = re.search(r"```sh\n(.*?)```", credentials, re.DOTALL)
    assert match, "the guide's Credentials section has a shell recipe"
    return match[1]


def _rabbitmqctl_path(tmp_path: Path) -> str:
    """PATH for the recipe: the local rabbitmqctl, or one reaching into the test container."""
    container = os.environ.get("CONTACTS_TEST_RABBITMQ_CONTAINER")
    if not container:
        return os.environ["PATH"]
    shim = tmp_path / "bin" / "rabbitmqctl"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec docker exec {container} rabbitmqctl "$@"\n')
    shim.chmod(0o755)
    return f"{shim.parent}{os.pathsep}{os.environ['PATH']}"


async def test_the_permission_recipe_gives_a_system_what_the_guide_says(system: System, tmp_path: Path) -> None:
    user = f"t{uuid.uuid4().hex[:8]}-tool"
    password_file = tmp_path / "password"
    script = _recipe().replace("user=support-tool", f"user={user}") + f'\nprintf %s "$password" > {password_file}\n'
    env = {
        **os.environ,
        "CONTACTS_NAMESPACE": system.namespace,
        "PATH": _rabbitmqctl_path(tmp_path),
    }
    ran = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-euc", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    try:
        url = urlsplit(system.amqp_url)
        as_user = url._replace(netloc=f"{user}:{quote(password_file.read_text(), safe='')}@{url.hostname}:{url.port}")
        connection = await aio_pika.connect(as_user.geturl())
        async with connection:
            await _what_it_may_do(system, connection, user)
            await _what_it_may_not_do(system, connection)
    finally:
        await asyncio.to_thread(
            subprocess.run,
            ["rabbitmqctl", "delete_user", user],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )


async def _publish(connection: aio_pika.abc.AbstractConnection, exchange_name: str, message: object) -> None:
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(exchange_name, ensure=False)
    envelope = envelope_for(message)  # type: ignore[arg-type]
    await exchange.publish(
        aio_pika.Message(envelope.model_dump_json().encode(), message_id=str(envelope.message_id)),
        routing_key=envelope.type,
    )
    await channel.close()


async def _what_it_may_do(system: System, connection: aio_pika.abc.AbstractConnection, user: str) -> None:
    exchange = f"{system.namespace}contacts"
    await _publish(
        connection,
        exchange,
        AccountUpserted(nic="hh88888-ovh", email="h@example.test", zone=Zone.EU),
    )
    await eventually(
        lambda: system.sql("requests", "SELECT 1 FROM accounts WHERE nic = 'hh88888-ovh'"),
        what="its account",
    )
    channel = await connection.channel()
    queue = await channel.declare_queue(
        f"{system.namespace}{user}.events",
        durable=True,
        arguments={"x-queue-type": "quorum"},
    )
    await queue.bind(exchange, "contact_change.#")
    await queue.delete(if_unused=False, if_empty=False)
    await channel.close()


async def _what_it_may_not_do(system: System, connection: aio_pika.abc.AbstractConnection) -> None:
    forged = ContactChangeVetted(request_id=uuid.uuid4(), phase=Phase.submit, approved=True)
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match="contact_change.vetted"):
        await _publish(connection, f"{system.namespace}contacts", forged)
    channel = await connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        queue = await channel.get_queue(f"{system.namespace}requests", ensure=False)
        await queue.get(fail=False)
    # Nothing of the forged message reached a service.
    rows = await system.sql(
        "requests",
        "SELECT routing_key FROM inbox WHERE routing_key = 'contact_change.vetted'",
    )
    assert rows == [], json.dumps([dict(r) for r in rows])


def test_the_guides_validation_recipe_checks_formats(tmp_path: Path) -> None:
    """The Python recipe of docs/integration.md, run as written on a good and on bad bodies."""
    recipe = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert recipe, "docs/integration.md has a Python validation recipe"
    good = message_example("contact_change.submit")
    for body, valid in (
        (good, True),
        ({**good, "message_id": "not-a-uuid"}, False),
        ({**good, "occurred_at": "2026-01-31T12:00:00"}, False),  # no time zone
        ({**good, "data": {**good["data"], "changes": {"admin": None}}}, False),
    ):
        path = tmp_path / "body.json"
        path.write_text(json.dumps(body))
        code = (
            recipe[1].replace("docs/examples/contact_change.submit.json", str(path)).replace("docs/", f"{ROOT}/docs/")
        )
        if valid:
            exec(code, {})  # noqa: S102 - the guide's own code, on our own files
        else:
            with pytest.raises(jsonschema.ValidationError):
                exec(code, {})  # noqa: S102

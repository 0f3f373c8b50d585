"""The contract is enough for a client that is neither Python nor amqplib: the shell example
(Debian's amqp-tools and jq, examples/shell-publisher) feeds an account set and a service,
submits a change by message, and follows it to `contact_change.completed` while the confirmers
accept through the API with their emailed codes."""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import aio_pika
import pytest
from capture import validator_for
from contract.examples import assert_change_completed, example_env, run_example
from support import ROOT, System

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "examples" / "shell-publisher" / "publish-and-follow.sh"
TOOLS = ("amqp-publish", "amqp-consume", "amqp-delete-queue", "jq")


@pytest.fixture(scope="session")
def amqp_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: apt-get install amqp-tools jq (scripts/test does it as root)")


def amqp_tools_url(url: str) -> str:
    """`url` as amqp-tools read it: they follow the AMQP URI spec, where `host:5672/` names the
    vhost "" (amqplib and aio-pika read it as "/"), so the default vhost is written `%2f`."""
    parts = urlsplit(url)
    return parts._replace(path="/%2f").geturl() if parts.path in ("", "/") else url


async def queue_exists(amqp_url: str, queue: str) -> bool:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, passive=True)
        return True
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        await connection.close()


def test_the_default_vhost_is_written_for_amqp_tools() -> None:
    assert amqp_tools_url("amqp://guest:guest@127.0.0.1:5672/") == "amqp://guest:guest@127.0.0.1:5672/%2f"
    assert amqp_tools_url("amqp://u:p@h:5672") == "amqp://u:p@h:5672/%2f"
    assert amqp_tools_url("amqp://u:p@h:5672/tenant") == "amqp://u:p@h:5672/tenant"


async def test_shell_publisher_submits_and_sees_the_change_completed(system: System, amqp_tools: None) -> None:
    env = example_env(system, amqp_tools_url(system.amqp_url), "shell-example-1")
    run = await run_example(system, ["bash", str(SCRIPT)], env)
    events = run.events

    # It listened before publishing, published in the guide's order, then followed its request.
    assert [e["event"] for e in events[:7]] == ["listening"] + ["published"] * 5 + ["waiting"], events
    published = [e["type"] for e in events if e["event"] == "published"]
    assert published == ["account.upserted"] * 3 + ["service.upserted", "contact_change.submit"]
    assert {e["request_id"] for e in run.of("state_changed")} == {run.request_id}
    await assert_change_completed(system, run)

    # Its queue is gone, and its messages went through the same contract checks as the services'.
    (listening,) = [e for e in events if e["event"] == "listening"]
    assert listening["queue"].startswith(f"{system.namespace}example.shell.")
    assert not await queue_exists(system.amqp_url, listening["queue"])
    assert system.capture
    bodies = {m.json()["message_id"]: m for m in system.capture.messages if m.routing_key in published}
    for event in events:
        if event["event"] == "published":
            message = bodies[event["message_id"]]
            assert message.routing_key == event["type"]
            assert not list(validator_for(message.routing_key).iter_errors(message.json()))

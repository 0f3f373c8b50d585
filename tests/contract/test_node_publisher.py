"""The contract is enough for a system outside Python: the Node.js example (amqplib from npm)
feeds an account set and a service, submits a change by message, and follows it to
`contact_change.completed` while the confirmers accept through the API with their emailed codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from capture import validator_for
from contract.examples import assert_change_completed, example_env, run_example
from contract.node import NODE_EXAMPLE, installed_from_lock
from support import System

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def node_example() -> Path:
    """The example with its locked dependencies installed (`npm ci`, not run again while the
    lockfile is unchanged since the last install, so the suite stays fast)."""
    return installed_from_lock(NODE_EXAMPLE)


async def test_node_publisher_submits_and_sees_the_change_completed(system: System, node_example: Path) -> None:
    env = example_env(system, system.amqp_url, "node-example-1")
    run = await run_example(system, ["node", "publish-and-follow.mjs"], env, cwd=node_example)

    published = [e["type"] for e in run.of("published")]
    assert published == ["account.upserted"] * 3 + ["service.upserted", "contact_change.submit"]
    await assert_change_completed(system, run)
    # What it published went through the same contract checks as the services' messages.
    assert system.capture
    for message in system.capture.messages:
        if message.routing_key in published:
            assert not list(validator_for(message.routing_key).iter_errors(message.json()))

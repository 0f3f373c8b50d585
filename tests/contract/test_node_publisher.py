"""The contract is enough for a system outside Python: the Node.js example (amqplib from npm)
feeds an account set and a service, submits a change by message, and follows it to
`contact_change.completed` while the confirmers accept through the API with their emailed codes."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from capture import validator_for
from contract.examples import assert_change_completed, example_env, run_example
from support import ROOT, System

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "node-publisher"


@pytest.fixture(scope="session")
def node_example() -> Path:
    """The example with its locked dependencies installed (`npm ci`, not run again while the
    lockfile is unchanged since the last install, so the suite stays fast)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are not installed: apt-get install nodejs npm (scripts/test does it as root)")
    lock_digest = hashlib.sha256((EXAMPLE / "package-lock.json").read_bytes()).hexdigest()
    stamp = EXAMPLE / "node_modules" / ".installed-from-lock"
    if not stamp.exists() or stamp.read_text() != lock_digest:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            check=False,
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        stamp.write_text(lock_digest)
    return EXAMPLE


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

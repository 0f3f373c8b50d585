"""The contract is enough for a system outside Python: the Node.js example (amqplib from npm)
feeds an account set and a service, submits a change by message, and follows it to
`contact_change.completed` while the confirmers accept through the API with their emailed codes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from capture import validator_for
from support import ROOT, System, eventually

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "node-publisher"
SERVICE = "shop-example.com"
REQUESTER, OLD_TECH, NEW_TECH = "aa11111-ovh", "cc33333-ovh", "bb22222-ovh"
EMAILS = {REQUESTER: "owner@shop-example.test", NEW_TECH: "webmaster@shop-example.test"}


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
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        stamp.write_text(lock_digest)
    return EXAMPLE


async def test_node_publisher_submits_and_sees_the_change_completed(system: System, node_example: Path) -> None:
    env = {
        **os.environ,
        "AMQP_URL": system.amqp_url,
        "CONTACTS_NAMESPACE": system.namespace,
        "SERVICE": SERVICE,
        "REQUESTER": REQUESTER,
        "OLD_TECH": OLD_TECH,
        "NEW_TECH": NEW_TECH,
        "IDEMPOTENCY_KEY": "node-example-1",
        "TIMEOUT_SECONDS": "90",
    }
    process = await asyncio.create_subprocess_exec(
        "node", "publish-and-follow.mjs", cwd=node_example, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    events: list[dict[str, Any]] = []

    async def read_events() -> None:
        assert process.stdout
        async for line in process.stdout:
            events.append(json.loads(line))

    reader = asyncio.create_task(read_events())
    try:
        # The script learns its request's id from the state_changed carrying its idempotency key.
        async def request_id() -> str | None:
            if process.returncode is not None:
                raise AssertionError(f"the script ended early: {events}")
            return next((e["request_id"] for e in events if e["event"] == "state_changed"), None)

        rid = await eventually(request_id, timeout=30, what="the script to see its request")
        for nic in (REQUESTER, NEW_TECH):
            mail = await system.token_mail(EMAILS[nic], rid)
            response = await system.act(nic, rid, "accept", mail.token)
            assert response.status_code == 200, response.text

        status = await asyncio.wait_for(process.wait(), timeout=60)
        await reader
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            reader.cancel()
            await reader
    stderr = (await process.stderr.read()).decode() if process.stderr else ""
    assert status == 0, f"events: {events}\nstderr: {stderr}"

    published = [e["type"] for e in events if e["event"] == "published"]
    assert published == ["account.upserted"] * 3 + ["service.upserted", "contact_change.submit"]
    states = [e["state"] for e in events if e["event"] == "state_changed"]
    assert states[0] == "checking" and "validating" in states
    (completed,) = [e for e in events if e["event"] == "completed"]
    assert completed == {
        "event": "completed", "request_id": rid, "service": SERVICE, "type": "tech", "from": OLD_TECH, "to": NEW_TECH,
    }  # fmt: skip
    assert (await system.contacts_of(REQUESTER, SERVICE) or {}).get("tech") == NEW_TECH
    # What it published went through the same contract checks as the services' messages.
    assert system.capture
    for message in system.capture.messages:
        if message.routing_key in published:
            assert not list(validator_for(message.routing_key).iter_errors(message.json()))

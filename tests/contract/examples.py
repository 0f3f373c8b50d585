"""Running one of the examples of another system (examples/*-publisher) against a test's system:
it publishes an account set, a service and a `contact_change.submit`, and prints one JSON event
a line while it follows its request; the confirmers accept with their emailed codes meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import System, eventually

SERVICE = "shop-example.com"
REQUESTER, OLD_TECH, NEW_TECH = "aa11111-ovh", "cc33333-ovh", "bb22222-ovh"
EMAILS = {REQUESTER: "owner@shop-example.test", OLD_TECH: "tech@shop-example.test", NEW_TECH: "webmaster@shop-example.test"}


@dataclass
class Run:
    status: int
    events: list[dict[str, Any]]
    stderr: str
    request_id: str

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


def example_env(system: System, amqp_url: str, idempotency_key: str) -> dict[str, str]:
    """The settings both examples read, for the story of this module's constants."""
    return {
        **os.environ,
        "AMQP_URL": amqp_url,
        "CONTACTS_NAMESPACE": system.namespace,
        "SERVICE": SERVICE,
        "REQUESTER": REQUESTER,
        "OLD_TECH": OLD_TECH,
        "NEW_TECH": NEW_TECH,
        "REQUESTER_EMAIL": EMAILS[REQUESTER],
        "OLD_TECH_EMAIL": EMAILS[OLD_TECH],
        "NEW_TECH_EMAIL": EMAILS[NEW_TECH],
        "IDEMPOTENCY_KEY": idempotency_key,
        "TIMEOUT_SECONDS": "90",
    }


async def run_example(system: System, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run the example until it exits, accepting as both confirmers once it has seen its request."""
    # Its own session, so that a failed test stops it and whatever it started.
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    events: list[dict[str, Any]] = []

    async def read_events() -> None:
        assert process.stdout
        async for line in process.stdout:
            events.append(json.loads(line))

    reader = asyncio.create_task(read_events())
    try:
        # The example learns its request's id from the state_changed carrying its idempotency key.
        async def request_id() -> str | None:
            if process.returncode is not None:
                raise AssertionError(f"the example ended early: {events}")
            return next((e["request_id"] for e in events if e["event"] == "state_changed"), None)

        rid = await eventually(request_id, timeout=30, what="the example to see its request")
        for nic in (REQUESTER, NEW_TECH):
            mail = await system.token_mail(EMAILS[nic], rid)
            response = await system.act(nic, rid, "accept", mail.token)
            assert response.status_code == 200, response.text
        status = await asyncio.wait_for(process.wait(), timeout=60)
        await reader
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            reader.cancel()
            await reader
    stderr = (await process.stderr.read()).decode() if process.stderr else ""
    # Next to the services' logs in test-artifacts/<test>/, for reading what a run printed.
    (system.log_dir / f"{Path(argv[-1]).stem}.out").write_text("".join(json.dumps(e) + "\n" for e in events) + stderr)
    assert status == 0, f"events: {events}\nstderr: {stderr}"
    return Run(status, events, stderr, rid)


async def assert_change_completed(system: System, run: Run) -> None:
    """The example followed its request to the end, and the change is applied."""
    states = [e["state"] for e in run.of("state_changed")]
    assert states[0] == "checking" and states[-1] == "done", states
    assert states.index("checking") < states.index("validating") < states.index("done"), states
    assert run.events[-1] == {
        "event": "completed", "request_id": run.request_id, "service": SERVICE, "type": "tech",
        "from": OLD_TECH, "to": NEW_TECH,
    }  # fmt: skip
    assert (await system.contacts_of(REQUESTER, SERVICE) or {}).get("tech") == NEW_TECH

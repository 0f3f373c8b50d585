"""Helpers of the operations tests: more replicas of a service, restarts, and a workload of many
independent contact changes driven to the end as users would (submit, confirm from the emails).
(Imported by the tests of this folder; conftest.py puts the folder on sys.path.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from contacts_shared.contracts import AccountUpserted, ServiceUpserted, Zone
from launch import Process, launch
from support import System, consumer_count, eventually, queue_depth

T = TypeVar("T")
PROGRAM_QUEUES = {"contacts-requests": "requests", "contacts-billing-check": "billing_check", "contacts-notifier": "notifier"}


class Services:
    """Start, stop and restart service processes of a `system` (all end with the fixture)."""

    def __init__(self, system: System) -> None:
        self.system = system
        # The environment the fixture started the services with, so that replicas and restarts
        # run with exactly the same settings.
        self.env = dict(system.env)
        self.programs: dict[str, str] = {name: name for name in system.processes}
        self.overrides: dict[str, dict[str, str]] = {name: {} for name in system.processes}

    def spawn(self, name: str, program: str, **overrides: str) -> Process:
        """Start `program` as process `name`, with the system's environment plus `overrides`."""
        process = launch(program, {**self.env, **overrides}, self.system.log_dir / f"{name}.log")
        self.system.processes[name] = process
        self.programs[name] = program
        self.overrides[name] = overrides
        return process

    async def terminate(self, name: str, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM, then wait for the exit; returns (exit status, seconds it took)."""
        process = self.system.processes[name]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        while process.poll() is None and time.monotonic() - started < timeout:
            await asyncio.sleep(0.02)
        if process.poll() is None:
            process.kill()
            process.wait()
        return process.returncode, time.monotonic() - started

    async def restart(self, name: str, **overrides: str) -> tuple[int, float]:
        """Stop `name` with SIGTERM and start it again (with `overrides` added); returns how it stopped."""
        status = await self.terminate(name)
        self.spawn(name, self.programs[name], **{**self.overrides[name], **overrides})
        await self.wait_ready(name)
        return status

    async def wait_ready(self, name: str, consumers: int = 1) -> None:
        program = self.programs[name]
        queue = f"{self.system.namespace}{PROGRAM_QUEUES[program]}"

        async def ready() -> bool:
            process = self.system.processes[name]
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.system.logs()[-3000:]}")
            if await consumer_count(self.system.amqp_url, queue) < consumers:
                return False
            if program != "contacts-requests":
                return True
            # Its consumers start before its HTTP server: ready when both are.
            try:
                async with httpx.AsyncClient(base_url=self.system.api_url, timeout=2) as client:
                    return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=60, what=f"{name} to consume from {queue}")


# --- a workload of independent flows ------------------------------------------------------------


@dataclass
class Flow:
    """One service whose admin names a new technical contact; both confirm; it ends `done`."""

    service: str
    owner: str
    old: str
    new: str
    request_id: str | None = None


def email(nic: str) -> str:
    return f"{nic}@example.test"


async def feed_flows(system: System, count: int) -> list[Flow]:
    flows = [
        Flow(service=f"flow-{i}.example", owner=f"fa{i:05d}-ovh", old=f"fb{i:05d}-ovh", new=f"fc{i:05d}-ovh")
        for i in range(count)
    ]
    people = [nic for f in flows for nic in (f.owner, f.old, f.new)]
    await system.publish(
        *[AccountUpserted(nic=nic, email=email(nic), zone=Zone.EU) for nic in people],
        *[ServiceUpserted(service=f.service, type="hosting", admin=f.owner, tech=f.old, billing=f.owner) for f in flows],
    )

    async def known() -> bool:
        # Several replicas may consume: wait for every account and service, not just the last.
        accounts = await system.sql("requests", "SELECT count(*) AS n FROM accounts WHERE nic = ANY($1::text[])", people)
        services = await system.sql(
            "requests", "SELECT count(*) AS n FROM services WHERE service = ANY($1::text[])", [f.service for f in flows]
        )
        return accounts[0]["n"] == len(people) and services[0]["n"] == len(flows)

    await eventually(known, timeout=60, what="the flows' accounts and services to be known")
    return flows


async def retrying(call: Callable[[], Awaitable[T]], *, timeout: float = 60.0) -> T:
    """Repeat a call while the service is unreachable (restarting), as a client would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def drive(
    system: System, flow: Flow, *, via: list[str] | None = None, read_mail: asyncio.Event | None = None
) -> None:
    """Submit, confirm as both confirmers from their emails, wait for `done`. `via`: the API
    base URLs to spread the calls over (replicas), else the system's. `read_mail`: the
    confirmers answer only once it is set (people who read their email later)."""
    urls = via or [system.api_url]
    at = [dataclasses.replace(system, api_url=url) for url in urls]

    async def submit() -> str:
        return await at[0].submit_one(flow.owner, flow.service, {"tech": flow.new})

    flow.request_id = await retrying(submit)
    for turn, nic in enumerate((flow.new, flow.owner), start=1):
        # Each flow has its own people: their one "please confirm" email is this request's.
        (mail,) = await system.wait_mails(email(nic), "please confirm", timeout=90)
        assert mail.request_id == flow.request_id
        if read_mail is not None:
            await read_mail.wait()
        client = at[turn % len(at)]
        answer = await retrying(lambda: client.act(nic, flow.request_id, "accept", mail.token))  # noqa: B023 - awaited here
        assert answer.status_code == 200, answer.text

    async def done() -> bool:
        view = await retrying(lambda: at[-1].request(flow.owner, flow.request_id))
        return view["state"] == "done"

    await eventually(done, timeout=90, what=f"{flow.service} to be done")


async def assert_each_flow_done_exactly_once(system: System, flows: list[Flow]) -> None:
    """Contacts changed, one token email per confirmer, one `done` email per party, no
    transition recorded twice, nothing dead-lettered, the outboxes drained."""
    for flow in flows:
        assert (await system.contacts_of(flow.owner, flow.service))["tech"] == flow.new, flow

    async def all_done_mails() -> bool:
        return all(len(system.mails(email(n), "done")) >= 1 for f in flows for n in (f.owner, f.new, f.old))

    await eventually(all_done_mails, timeout=60, what="every 'done' email")
    for flow in flows:
        for nic in (flow.owner, flow.new):
            tokens = [m for m in system.mails(email(nic), "please confirm") if m.request_id == flow.request_id]
            assert len(tokens) == 1, (nic, [m.subject for m in tokens])
        for nic in (flow.owner, flow.new, flow.old):
            assert len(system.mails(email(nic), "done")) == 1, (nic, [m.subject for m in system.mails(email(nic))])
    twice = await system.sql(
        "requests",
        "SELECT request_id, state, actor, reason, count(*) AS n FROM history GROUP BY 1, 2, 3, 4 HAVING count(*) > 1",
    )
    assert twice == [], twice
    for schema in ("requests", "billing_check", "notifier"):
        assert await queue_depth(system.amqp_url, f"{system.namespace}{schema}.dlq") == 0, f"{schema} dead letters"

        async def drained(schema: str = schema) -> bool:
            return (await system.sql(schema, "SELECT count(*) AS n FROM outbox"))[0]["n"] == 0

        await eventually(drained, timeout=30, what=f"the {schema} outbox to drain")

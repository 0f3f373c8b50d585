"""A scenario: many flows in flight, a fault injected at a seeded moment inside a marked window,
and the audit. Also the faults done to the system's own processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aio_pika
from contacts_tools.mailsink import MailSink
from faults.audit import Audit, EventTap, FaultWindow, audit
from faults.flows import MIXED, Flow, Users, email_of, feed, make_flows, run_flow
from launch import Process
from support import System, eventually, spawn, wait_ready


class Republisher:
    """Publishes every message on the exchange a second time, after a random delay, so that each
    consumer gets everything twice and out of order (as redeliveries and racing publishers do)."""

    def __init__(self, system: System, rng: random.Random) -> None:
        self.system = system
        self.rng = rng
        self.copies = 0
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.system.amqp_url)
        channel = await self._connection.channel()
        self._exchange = await channel.get_exchange(f"{self.system.namespace}contacts")
        queue = await channel.declare_queue(f"{self.system.namespace}replay", exclusive=True)
        await queue.bind(self._exchange, routing_key="#")
        await queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            if (message.headers or {}).get("x-test-copy"):
                return
            copy = aio_pika.Message(
                message.body,
                message_id=message.message_id,
                content_type=message.content_type,
                headers={"x-test-copy": 1},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            task = asyncio.create_task(self._later(copy, message.routing_key or ""))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _later(self, copy: aio_pika.Message, routing_key: str) -> None:
        await asyncio.sleep(self.rng.uniform(0, 1.5))
        await self._exchange.publish(copy, routing_key=routing_key)
        self.copies += 1

    async def stop(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=10)
        if self._connection:
            await self._connection.close()


@dataclass
class Scenario:
    """What a fault is given: the flows in flight, a seeded source of random moments, and
    `fault()` to mark its window."""

    system: System
    flows: list[Flow]
    rng: random.Random
    windows: list[FaultWindow] = field(default_factory=list)

    async def in_flight(self, low: float = 0.1, high: float = 0.9) -> None:
        """Wait until a seeded share (between `low` and `high`) of the flows has been submitted,
        so that over many runs a fault hits every phase, the apply step included."""
        await when_in_flight(self.flows, share=self.rng.uniform(low, high))

    @contextlib.asynccontextmanager
    async def fault(self, *, noticeable: bool = True) -> AsyncIterator[None]:
        """Mark the fault's window and note the requests' states when it struck. A fault that
        users must not notice at all (poison, stale messages) has an empty window."""
        rows = await self.system.sql(
            "requests",
            "SELECT state, count(*) AS n FROM contact_changes WHERE service LIKE $1 GROUP BY state",
            f"%.{self.flows[0].tag}.web-hosting",
        )
        states = Counter({r["state"]: r["n"] for r in rows})
        states["unsubmitted"] = sum(f.request_id is None for f in self.flows)
        window = FaultWindow(time.monotonic(), +states)
        self.windows.append(window)
        try:
            yield
        finally:
            if noticeable:
                processes = sum(key.split("#")[0] == "contacts-requests" for key in self.system.processes)
                await wait_ready(self.system, consumers=processes, timeout=120)
                window.end = time.monotonic()
            else:
                window.end = window.start


async def run_scenario(
    system: System,
    fault: str,
    count: int,
    inject: Callable[[Scenario], Awaitable[None]] | None = None,
    *,
    seed: int | None = None,
    flow_timeout: float = 300,
    kinds: tuple[str, ...] = MIXED,
    answer_together: bool = False,
    unreachable: int = 0,
    tag: str = "ovh",
) -> Audit:
    """Feed `count` flows, run them concurrently, call `inject` while they are in flight, audit.
    The first `unreachable` flows name a new contact whose mail server refuses them for good.
    The seed (printed) replays the flows' kinds and the fault's moments."""
    seed = seed if seed is not None else int(os.environ.get("FAULTS_SEED") or random.randrange(1 << 30))
    print(f"\n[{fault}] seed={seed}")
    rng = random.Random(seed)
    flows = make_flows(count, rng, tag=tag, kinds=kinds)
    for flow in flows[:unreachable]:
        flow.kind = "unreachable"
        system.sink.refuse(email_of(flow.nic("new")))
    await feed(system, flows)
    tap = EventTap(system, ("contact_change.completed",))
    await tap.bind()
    users = Users(system, random.Random(rng.random()), answer_together=answer_together)
    scenario = Scenario(system, flows, random.Random(rng.random()))
    try:
        tasks = [asyncio.create_task(run_flow(users, flow, flow_timeout)) for flow in flows]
        if inject is not None:
            await inject(scenario)
        fault_ended = time.monotonic()
        await asyncio.gather(*tasks)
    finally:
        await users.close()
    result = await audit(
        system,
        flows,
        tap,
        fault,
        fault_ended=fault_ended,
        windows=scenario.windows,
        mishaps=users.mishaps,
    )
    print(f"[{fault}] {result.row()}")
    for problem in result.problems[:20]:
        print("  ", problem)
    return result


async def when_in_flight(flows: list[Flow], share: float, timeout: float = 120) -> None:
    async def enough() -> bool:
        return sum(f.request_id is not None for f in flows) >= share * len(flows)

    await eventually(
        enough,
        timeout=timeout,
        what=f"{share:.0%} of the flows to be submitted",
        interval=0.1,
    )


# --- faults on the system's own processes -------------------------------------------------------


async def kill_and_restart(system: System, name: str, down_for: float) -> None:
    """SIGKILL every process of service `name` (no goodbye, no cleanup), start them again after
    `down_for` seconds, and wait until they consume and answer again."""
    keys = [key for key in system.processes if key.split("#")[0] == name]
    for key in keys:
        os.killpg(system.processes[key].pid, signal.SIGKILL)
        system.processes[key].wait()
    await asyncio.sleep(down_for)  # the outage itself
    for key in keys:
        replica = int(key.split("#")[1]) if "#" in key else 1
        spawn(system, name, replica)
    await wait_ready(system, consumers=len(keys), timeout=60)


async def crash_at(system: System, name: str, crashes: list[tuple[str, int]]) -> None:
    """Restart service `name` (a clean stop) armed to kill itself the n-th time it reaches a
    crash point (contacts_shared.crashpoints), for each (point, n) in turn, then start it unarmed
    (not waiting for it to be ready: `Scenario.fault` does, once every crash is over)."""
    process = system.processes[name]
    process.send_signal(signal.SIGTERM)
    await eventually(lambda: _exited(process), timeout=30, what=f"{name} to stop")
    for point, nth in crashes:
        system.service_env[name] = {**system.service_env.get(name, {}), "CONTACTS_CRASH_AT": f"{point}:{nth}"}
        try:
            armed = spawn(system, name)
        finally:
            del system.service_env[name]["CONTACTS_CRASH_AT"]
        await eventually(lambda armed=armed: _exited(armed), timeout=90, what=f"{name} to reach {point} {nth} times")
        assert armed.returncode == -signal.SIGKILL, f"{name} exited with {armed.returncode}, not killed at {point}"
    spawn(system, name)


async def _exited(process: Process) -> bool:
    return process.poll() is not None


async def smtp_outage(system: System, seconds: float) -> None:
    """Stop the SMTP server for `seconds`, then start a new one on the same port (it keeps the
    mails received so far, as a real mailbox would)."""
    old = system.sink
    old.stop()
    await asyncio.sleep(seconds)  # the outage itself
    sink = MailSink(old.smtp_host, old.smtp_port, old.http_port)
    for mail in old.store.messages():
        sink.store.add(mail.mail_from, list(mail.rcpt_tos), mail.raw)
    sink.start()
    system.sink = sink

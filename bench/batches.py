"""The batch flow of the benchmark (issue 20): an agency changes the technical contact of
`size` services at once, as users do it. One batch is: the admin `POST`s
`/v1/contact-change-batches` naming every service of its group; the bench waits for the **two
batch emails** (one per confirmer, one code each); the new contact, then the admin, accept the
whole batch with `POST .../accept`; the bench waits for the **three "done" emails of every
request**. Measured as changes applied per second, in the same run as the single flows, so that
the two compare on the same machine at the same moment.

Each batch group has its own admin and pair of technical contacts (a batch has one requester);
its services are seeded beside the single flows' ones and never touched by them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
from contacts_shared.contracts import AccountUpserted, ServiceUpserted, Zone

from bench.harness import Bench, BenchService, FlowError, eventually


@dataclass
class BatchGroup(BenchService):
    """An agency: one admin (`name` is the group's) of `services`, which it changes together."""

    services: list[str] = field(default_factory=list)


def batch_groups(count: int, size: int) -> list[BatchGroup]:
    return [
        BatchGroup(f"group{g}", f"bx{g}-bench", f"by{g}-bench", f"bz{g}-bench", f"bw{g}-bench", services=[f"b{g}s{i}.bench.example" for i in range(size)])
        for g in range(count)
    ]


async def seed_groups(bench: Bench, groups: list[BatchGroup]) -> None:
    messages: list[AccountUpserted | ServiceUpserted] = []
    for g in groups:
        messages += [AccountUpserted(nic=nic, email=f"{nic}@example.test", zone=Zone.EU) for nic in (g.admin, g.tech_a, g.tech_b, g.billing)]
        messages += [ServiceUpserted(service=s, type="hosting", admin=g.admin, tech=g.tech, billing=g.billing) for s in g.services]
    await bench.system.publish(*messages)
    names = [s for g in groups for s in g.services]

    async def seeded() -> bool:
        conn = await bench.connect("requests")
        try:
            return await conn.fetchval("SELECT count(*) FROM services WHERE service = ANY($1)", names) == len(names)
        finally:
            await conn.close()

    await eventually(seeded, timeout=300, what="the batch groups' services to reach the requests service")


class BatchDriver:
    """Runs batch flows over the groups, never two at once on one group."""

    def __init__(self, bench: Bench, groups: list[BatchGroup], timeout: float) -> None:
        self.bench = bench
        self.timeout = timeout
        self.free: asyncio.Queue[BatchGroup] = asyncio.Queue()
        for g in groups:
            self.free.put_nowait(g)
        self.client = aiohttp.ClientSession(base_url=bench.system.api_url, timeout=aiohttp.ClientTimeout(total=timeout))
        self.stages: dict[str, list[float]] = {}

    def auth(self, nic: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bench.system.jwt(nic)}"}

    async def close(self) -> None:
        await self.client.close()

    async def _post(self, path: str, body: dict, nic: str, expected: int) -> dict:
        async with self.client.post(path, json=body, headers=self.auth(nic)) as response:
            if response.status != expected:
                raise FlowError(f"{path} answered {response.status}: {(await response.text())[:300]}")
            return await response.json()

    async def batch_flow(self) -> int:
        """One batch from submission to every done email; the changes it applied. The time of each
        stage goes in `self.stages` (seconds)."""
        group = await self.free.get()
        tracker, new = self.bench.tracker, group.other_tech
        t0 = time.perf_counter()
        answer = await self._post("/v1/contact-change-batches", {"changes": [{"service": s, "tech": new} for s in group.services]}, group.admin, 202)
        t1 = time.perf_counter()
        if answer["refused"]:
            raise FlowError(f"batch refused in part: {answer['refused'][:2]}")
        batch_id, ids = answer["batch_id"], [item["id"] for item in answer["items"]]
        try:
            arrivals = await tracker.wait(batch_id, lambda a: len(a.tokens) >= 2, self.timeout, "the two batch emails")
            t2 = time.perf_counter()
            for nic in (new, group.admin):  # the admin last: its acceptance applies the changes
                await self._post(f"/v1/contact-change-batches/{batch_id}/accept", {"token": arrivals.tokens[nic]}, nic, 200)
            t3 = time.perf_counter()
            for request_id in ids:
                await tracker.wait(request_id, lambda a: len(a.done_to) >= 3, self.timeout, "the three done emails")
            t4 = time.perf_counter()
            for stage, seconds in (("submit", t1 - t0), ("submit -> batch emails", t2 - t1), ("two accepts", t3 - t2), ("last accept -> done emails", t4 - t3), ("whole", t4 - t0)):
                self.stages.setdefault(stage, []).append(seconds)
        finally:
            for key in (batch_id, *ids):
                tracker.forget(key)
        group.tech = new
        self.free.put_nowait(group)
        return len(ids)


async def changes_per_second(driver: BatchDriver, batches: int, concurrency: int) -> float:
    """Batches back to back by `concurrency` agencies; the changes applied per second."""
    queue = list(range(batches))
    applied = 0

    async def agency() -> None:
        nonlocal applied
        while queue:
            queue.pop()
            changes = await driver.batch_flow()  # not `applied += await …`: it would read `applied` before the wait
            applied += changes

    started = time.perf_counter()
    await asyncio.gather(*(agency() for _ in range(concurrency)))
    return applied / (time.perf_counter() - started)


async def batch_phase(
    bench: Bench, *, batches: int, size: int, concurrency: int, timeout: float, single_flows_per_second: float
) -> dict[str, float | int]:
    """Seed one group per agency, warm up with one batch, then measure `batches` batches: the
    changes applied per second, and their ratio to the single flows' (one change each)."""
    groups = batch_groups(concurrency, size)
    await seed_groups(bench, groups)
    driver = BatchDriver(bench, groups, timeout)
    try:
        await driver.batch_flow()
        rate = await changes_per_second(driver, batches, concurrency)
    finally:
        await driver.close()
    return {
        "stages_ms_median": {stage: round(1000 * statistics.median(times)) for stage, times in driver.stages.items()},
        "stages_ms_max": {stage: round(1000 * max(times)) for stage, times in driver.stages.items()},
        "size": size,
        "batches": batches,
        "concurrency": concurrency,
        "changes_per_second": round(rate, 1),
        "single_flows_per_second": round(single_flows_per_second, 1),
        "ratio_to_single_flows": round(rate / single_flows_per_second, 2) if single_flows_per_second else 0.0,
    }

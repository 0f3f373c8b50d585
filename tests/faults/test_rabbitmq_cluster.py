"""The broker as users who outgrow one machine run it: three RabbitMQ nodes clustered, the
services' quorum queues replicated on all three, the services reaching them through HAProxy.
Under 200 flows the node leading most of the services' queues is killed with SIGKILL and started
again; in another run a node is cut off from the other two for 30 s and healed. The same audit
as every fault: nothing lost, stuck, doubled or dead-lettered."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import pytest
from faults.audit import queues_drained
from faults.scenario import Scenario, run_scenario
from own_cluster import HAPROXY, RabbitCluster, rabbit_cluster
from own_nodes import OwnRabbit, started_in_a_new_directory
from support import SCHEMAS, System, eventually

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]

FLOWS = 200
PARTITION_SECONDS = 30


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    if not shutil.which("rabbitmq-server") or not os.access(HAPROXY, os.X_OK):
        pytest.fail("the cluster tests need RabbitMQ and HAProxy: apt-get install rabbitmq-server haproxy")
    with started_in_a_new_directory("contacts-cluster-", rabbit_cluster) as started:
        yield started


@pytest.fixture
def amqp_url(cluster: RabbitCluster) -> str:
    return cluster.url


async def leading_node(cluster: RabbitCluster, system: System) -> OwnRabbit:
    """The node leading most of the services' queues; each queue has a replica on every node."""
    leaders = await asyncio.to_thread(cluster.leaders, system.namespace)
    for schema in SCHEMAS:
        members = await asyncio.to_thread(cluster.members, f"{system.namespace}{schema}")
        assert sorted(members) == sorted(node.node for node in cluster.nodes), f"{schema}'s replicas: {members}"
    (node, led), *_ = Counter(leaders.values()).most_common(1)
    print(f"  {node} leads {led} of the {len(leaders)} queues")
    return cluster.node_named(node)


async def fault_the_leading_node(system: System, cluster: RabbitCluster, name: str, fault: Callable[[OwnRabbit], Awaitable[None]]) -> None:
    """Run the flows with `fault` done to the node leading most of the services' queues while
    they are in flight, and audit."""

    async def inject(scenario: Scenario) -> None:
        node = await leading_node(cluster, system)
        await scenario.in_flight()  # asking the cluster first: rabbitmqctl takes seconds
        async with scenario.fault():
            await fault(node)

    result = await run_scenario(system, name, FLOWS, inject)
    assert result.problems == []
    await queues_drained(system, cluster.queues)


async def test_the_node_leading_the_queues_killed_and_restarted(faulty_system: System, cluster: RabbitCluster) -> None:
    async def kill_and_restart(leader: OwnRabbit) -> None:
        await asyncio.to_thread(cluster.kill, leader)

        async def others_lead() -> bool:
            leaders = await asyncio.to_thread(cluster.leaders, faulty_system.namespace)
            return bool(leaders) and leader.node not in leaders.values()

        await eventually(others_lead, timeout=60, what="the other nodes to elect new leaders", interval=0.5)
        await asyncio.to_thread(leader.start)
        await asyncio.to_thread(cluster.wait_all_running)

    await fault_the_leading_node(faulty_system, cluster, "RabbitMQ cluster: the queues' leader killed, restarted", kill_and_restart)


async def test_a_node_cut_off_for_30_seconds(faulty_system: System, cluster: RabbitCluster) -> None:
    async def cut_off_and_heal(node: OwnRabbit) -> None:
        await asyncio.to_thread(cluster.cut_off, node)

        async def paused() -> bool:  # in the minority, it stops serving: the cut is real
            return (await asyncio.to_thread(node.ctl, "eval", "rabbit:is_running().")).strip() == "false"

        await eventually(paused, timeout=30, what=f"{node.node} to pause in the minority", interval=0.5)
        await asyncio.sleep(PARTITION_SECONDS)  # the partition itself
        await asyncio.to_thread(cluster.heal, node)
        await asyncio.to_thread(cluster.wait_all_running)

    await fault_the_leading_node(faulty_system, cluster, f"RabbitMQ cluster: a node cut off {PARTITION_SECONDS} s", cut_off_and_heal)

"""The broker as users who outgrow one machine run it: three RabbitMQ nodes clustered, the
services' quorum queues replicated on all three, the services reaching them through HAProxy.
Under 200 flows the node leading most of the services' queues is killed with SIGKILL and started
again; in another run a node is cut off from the other two for 30 s and healed. The same audit
as every fault: nothing lost, stuck, doubled or dead-lettered."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults.audit import queues_drained
from faults.scenario import Scenario, run_scenario
from own_cluster import HAPROXY, RabbitCluster, rabbit_cluster
from own_nodes import OwnRabbit
from support import SCHEMAS, System, eventually

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]

FLOWS = 200
PARTITION_SECONDS = 30


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    if not shutil.which("rabbitmq-server") or not os.access(HAPROXY, os.X_OK):
        pytest.fail("the cluster tests need RabbitMQ and HAProxy: apt-get install rabbitmq-server haproxy")
    root = Path(tempfile.mkdtemp(prefix="contacts-cluster-"))
    os.chmod(root, 0o755)
    started = rabbit_cluster(root)
    try:
        started.start()
        yield started
    finally:
        started.stop()
        shutil.rmtree(root, ignore_errors=True)


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


async def test_the_node_leading_the_queues_killed_and_restarted(faulty_system: System, cluster: RabbitCluster) -> None:
    async def kill_the_leader(scenario: Scenario) -> None:
        leader = await leading_node(cluster, faulty_system)
        await scenario.in_flight()  # asking the cluster first: rabbitmqctl takes seconds
        async with scenario.fault():
            await asyncio.to_thread(cluster.kill, leader)

            async def others_lead() -> bool:
                leaders = await asyncio.to_thread(cluster.leaders, faulty_system.namespace)
                return bool(leaders) and leader.node not in leaders.values()

            await eventually(others_lead, timeout=60, what="the other nodes to elect new leaders", interval=0.5)
            await asyncio.to_thread(leader.start)
            await asyncio.to_thread(cluster.wait_all_running)

    result = await run_scenario(faulty_system, "RabbitMQ cluster: the queues' leader killed, restarted", FLOWS, kill_the_leader)
    assert result.problems == []
    await queues_drained(faulty_system, cluster.queues)


async def test_a_node_cut_off_for_30_seconds(faulty_system: System, cluster: RabbitCluster) -> None:
    async def partition(scenario: Scenario) -> None:
        node = await leading_node(cluster, faulty_system)
        await scenario.in_flight()  # asking the cluster first: rabbitmqctl takes seconds
        async with scenario.fault():
            await asyncio.to_thread(cluster.cut_off, node)

            async def paused() -> bool:  # in the minority, it stops serving: the cut is real
                return (await asyncio.to_thread(node.ctl, "eval", "rabbit:is_running().")).strip() == "false"

            await eventually(paused, timeout=30, what=f"{node.node} to pause in the minority", interval=0.5)
            await asyncio.sleep(PARTITION_SECONDS)  # the partition itself
            await asyncio.to_thread(cluster.heal, node)
            await asyncio.to_thread(cluster.wait_all_running)

    result = await run_scenario(faulty_system, f"RabbitMQ cluster: a node cut off {PARTITION_SECONDS} s", FLOWS, partition)
    assert result.problems == []
    await queues_drained(faulty_system, cluster.queues)

"""The database as users who outgrow one machine run it: a primary and a streaming standby,
replicating synchronously (a commit, hence an acknowledged message, is on both), the services
given both hosts with target_session_attrs=read-write. Under 200 flows the primary is killed
with SIGKILL, every process of it, and the standby promoted. The same audit as every fault:
nothing lost, stuck, doubled or dead-lettered; the row says how long until a change was
applied again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from faults.audit import queues_drained
from faults.conftest import OwnInfrastructure
from faults.scenario import Scenario, run_scenario
from own_cluster import PostgresPair, postgres_pair
from own_nodes import postgres_bin_dir, started_in_a_new_directory
from support import System

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]

FLOWS = 200


@pytest.fixture
def pair() -> Iterator[PostgresPair]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail("this test needs PostgreSQL's server binaries: apt-get install postgresql")
    with started_in_a_new_directory("contacts-failover-", lambda root: postgres_pair(root, bin_dir)) as started:
        yield started


@pytest.fixture
def database_url(pair: PostgresPair) -> str:
    return pair.url


async def test_the_primary_killed_and_the_standby_promoted(
    faulty_system: System, pair: PostgresPair, own_infrastructure: OwnInfrastructure
) -> None:
    async def failover(scenario: Scenario) -> None:
        await scenario.in_flight()
        async with scenario.fault():
            pair.kill_primary()
            await asyncio.to_thread(pair.promote)

    result = await run_scenario(faulty_system, "PostgreSQL: primary killed, standby promoted", FLOWS, failover)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)
    # Every request, those committed on the primary before it died included, is on the standby,
    # which now serves writes alone.
    standby = await asyncpg.connect(pair.standby.url)
    try:
        assert not await standby.fetchval("SELECT pg_is_in_recovery()")
        requests = await standby.fetchval(f'SELECT count(*) FROM "{faulty_system.namespace}requests".contact_changes')
    finally:
        await standby.close()
    assert requests == FLOWS

"""Faults injected into real processes while many flows are in flight; after each, the audit
checks that nothing was lost, nothing doubled, and every queue drained."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from contacts_shared.contracts import (
    AccountUpserted,
    ServiceUpserted,
    Zone,
    envelope_for,
)
from faults.audit import queues_drained
from faults.conftest import OwnInfrastructure
from faults.flows import email_of
from faults.scenario import (
    Republisher,
    Scenario,
    crash_at,
    kill_and_restart,
    run_scenario,
    smtp_outage,
)
from support import SCHEMAS, SERVICES, System, consumer_count, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FLOWS = 200


async def test_rabbitmq_restart(faulty_system: System, own_infrastructure: OwnInfrastructure) -> None:
    async def restart_broker(scenario: Scenario) -> None:
        await scenario.in_flight()
        async with scenario.fault():
            await own_infrastructure.rabbit.restart()

        # The consumers come back by themselves (a known FastStream pitfall is that they don't).
        async def consuming_again() -> bool:
            counts = [await consumer_count(faulty_system.amqp_url, f"{faulty_system.namespace}{s}") for s in SCHEMAS]
            return all(counts)

        await eventually(
            consuming_again,
            timeout=60,
            what="every service to consume again after the restart",
        )

    result = await run_scenario(faulty_system, "RabbitMQ restart", FLOWS, restart_broker)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


async def test_postgres_restart(faulty_system: System, own_infrastructure: OwnInfrastructure) -> None:
    async def restart_database(scenario: Scenario) -> None:
        await scenario.in_flight()
        async with scenario.fault():
            await own_infrastructure.postgres.restart()

    result = await run_scenario(faulty_system, "PostgreSQL restart", FLOWS, restart_database)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


async def test_kill_each_service_in_turn(faulty_system: System, own_infrastructure: OwnInfrastructure) -> None:
    async def kill_in_turn(scenario: Scenario) -> None:
        await scenario.in_flight(0.1, 0.5)
        for name in scenario.rng.sample(SERVICES, len(SERVICES)):
            await asyncio.sleep(scenario.rng.uniform(0.5, 4))  # a random moment
            async with scenario.fault():
                await kill_and_restart(faulty_system, name, down_for=scenario.rng.uniform(0.5, 2))

    result = await run_scenario(faulty_system, "kill -9 each service in turn", FLOWS, kill_in_turn)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


# The crash points each service passes, the one on a later step of a flow first (the apply step,
# a verdict's publishing, an email), while every flow still has it ahead; then the one every
# message passes. The three services crash at the same time, each in its own sequence.
CRASH_POINTS = {
    "contacts-requests": ("during-apply", "after-commit-before-ack"),
    "contacts-billing-check": ("after-reply-before-ack", "after-commit-before-ack"),
    "contacts-notifier": ("after-smtp-before-mark", "after-commit-before-ack"),
}


async def test_kill_at_each_named_crash_point(faulty_system: System, own_infrastructure: OwnInfrastructure) -> None:
    """Each crash point at a seeded passage (1 to 5): the process dies there by SIGKILL, with no
    cleanup, and is started again."""

    async def crash_at_each_point(scenario: Scenario) -> None:
        await scenario.in_flight(0.05, 0.2)
        armed = {name: [(point, scenario.rng.randint(1, 5)) for point in points] for name, points in CRASH_POINTS.items()}
        for name, crashes in armed.items():
            print(f"  {name} crashes at", ", ".join(f"{point} (passage {nth})" for point, nth in crashes))
        async with scenario.fault():
            await asyncio.gather(*(crash_at(faulty_system, name, crashes) for name, crashes in armed.items()))

    result = await run_scenario(faulty_system, "kill -9 at each named crash point", FLOWS, crash_at_each_point)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


async def test_smtp_down_30_seconds(faulty_system: System, own_infrastructure: OwnInfrastructure) -> None:
    async def smtp_down(scenario: Scenario) -> None:
        await scenario.in_flight()
        async with scenario.fault():
            await smtp_outage(faulty_system, 30)

    result = await run_scenario(faulty_system, "SMTP down 30 s", FLOWS, smtp_down)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


@pytest.mark.parametrize("replicas", [2])
async def test_two_replicas_of_every_service(
    faulty_system: System, own_infrastructure: OwnInfrastructure, replicas: int
) -> None:
    assert len(faulty_system.processes) == 2 * len(SERVICES) and faulty_system.replica_api_urls

    result = await run_scenario(faulty_system, "two replicas of every service", FLOWS)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


async def test_every_message_twice_and_out_of_order(
    faulty_system: System, own_infrastructure: OwnInfrastructure
) -> None:
    republisher = Republisher(faulty_system, random.Random())
    await republisher.start()

    try:
        result = await run_scenario(faulty_system, "every message twice, out of order", FLOWS)
    finally:
        await republisher.stop()
    assert republisher.copies > 10 * FLOWS
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


async def test_upserts_delivered_in_reverse_order(faulty_system: System, own_infrastructure: OwnInfrastructure) -> None:
    """While the flows are in flight, an older version of every person and service arrives after
    the newer one: each person with another email address (applied, codes would go there: with
    the versions dated an hour ahead instead, 9 emails went missing), each service with other
    contacts (which a later upsert never changes anyway). The replicas must ignore them all."""
    published = 0

    async def older_versions_after(scenario: Scenario) -> None:
        nonlocal published
        await scenario.in_flight()
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        older = []
        for flow in scenario.flows:
            for role in ("owner", "new", "old", "billing"):
                nic = flow.nic(role)
                older.append(AccountUpserted(nic=nic, email=f"stale-{email_of(nic)}", zone=Zone.EU))
            stranger = flow.nic("billing")
            older.append(
                ServiceUpserted(service=flow.service, type="hosting", admin=stranger, tech=stranger, billing=stranger)
            )
        async with scenario.fault(noticeable=False):
            await faulty_system.publish(*(envelope_for(m).model_copy(update={"occurred_at": an_hour_ago}) for m in older))
        published = len(older)

    result = await run_scenario(faulty_system, "upserts delivered in reverse order", FLOWS, older_versions_after)
    assert published == 5 * FLOWS
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)
    stale = await faulty_system.sql("requests", "SELECT count(*) AS n FROM accounts WHERE email LIKE 'stale-%'")
    assert stale[0]["n"] == 0
    assert not [m for m in faulty_system.sink.store.messages() if any(r.startswith("stale-") for r in m.rcpt_tos)]

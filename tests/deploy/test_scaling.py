"""Scaling out: three replicas of each service against one broker and one database (the requests
replicas on their own HTTP ports, as behind a load balancer). Replicas start together (the
migrations wait on an advisory lock), share each service's queue, and every flow completes
exactly once whichever replica takes each message or HTTP call."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from support import System, free_port
from workload import Services, assert_each_flow_done_exactly_once, drive, feed_flows

pytestmark = pytest.mark.e2e

REPLICAS = 3
FLOWS = 9


@pytest.fixture
def system_settings() -> dict[str, str]:
    # Nine processes share one PostgreSQL (and other tests may run beside): small pools.
    return {"CONTACTS_DATABASE_POOL_SIZE": "4"}


async def test_three_replicas_of_each_service_complete_every_flow_exactly_once(
    system: System, services: Services
) -> None:
    api_urls = [system.api_url]
    for replica in range(2, REPLICAS + 1):
        port = free_port()
        services.spawn(f"contacts-requests-{replica}", "contacts-requests", CONTACTS_HTTP_PORT=str(port))
        services.spawn(f"contacts-billing-check-{replica}", "contacts-billing-check")
        services.spawn(f"contacts-notifier-{replica}", "contacts-notifier")
        api_urls.append(f"http://127.0.0.1:{port}")
    for name in ("contacts-requests", "contacts-billing-check", "contacts-notifier"):
        await services.wait_ready(name, consumers=REPLICAS)

    flows = await feed_flows(system, FLOWS)
    # Each flow's calls go round the three API replicas, starting at a different one.
    await asyncio.gather(
        *(drive(system, flow, via=api_urls[i % REPLICAS :] + api_urls[: i % REPLICAS]) for i, flow in enumerate(flows))
    )
    await assert_each_flow_done_exactly_once(system, flows)

    # Who did the work: messages handled per process (printed for the report, pytest -s).
    handled = {
        path.stem: len(re.findall(r"message handled", path.read_text(errors="replace")))
        for path in sorted(system.log_dir.glob("*.log"))
    }
    print("\nmessages handled per replica:", json.dumps(handled))
    for service in ("contacts-requests", "contacts-billing-check", "contacts-notifier"):
        replicas = [n for name, n in handled.items() if name == service or name.startswith(f"{service}-")]
        assert len(replicas) == REPLICAS and sum(replicas) > 0

"""No request stays stuck waiting for the billing check: its verdict is asked for again after
CONTACTS_VETTING_REASK (its first message may have been dead-lettered during an outage), and
when the request's time runs out it ends by itself, `expired` from `checking`, `failed` from
`applying`, with its emails, and its service and contact type are free again."""

from __future__ import annotations

from typing import Any

import aio_pika
import pytest
from seed import HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of, feed_world
from support import System, eventually, queue_depth
from workload import Services

pytestmark = pytest.mark.e2e
BILLING = "contacts-billing-check"


async def _purge(system: System, queue: str) -> None:
    connection = await aio_pika.connect(system.amqp_url)
    async with connection:
        channel = await connection.channel()
        await (await channel.declare_queue(f"{system.namespace}{queue}", passive=True)).purge()


async def _history(system: System, request_id: str) -> list[str]:
    rows = await system.sql("requests", "SELECT reason FROM history WHERE request_id = $1::uuid ORDER BY id", request_id)
    return [r["reason"] or "" for r in rows]


class TestAskedAgain:
    @pytest.fixture
    def system_settings(self) -> dict[str, str]:
        return {"CONTACTS_VETTING_REASK": "1"}

    async def test_a_lost_vetting_is_asked_for_again(self, system: System, services: Services) -> None:
        await feed_world(system)
        await services.terminate(BILLING)
        request_id = await system.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
        # Its question is lost (as if dead-lettered while the billing check was away).
        await eventually(lambda: queue_depth(system.amqp_url, f"{system.namespace}billing_check"), what="the question")
        await _purge(system, "billing_check")
        await eventually(
            lambda: _history_has(system, request_id, "the billing check was asked again"), what="a second question"
        )
        services.spawn(BILLING, BILLING)
        await services.wait_ready(BILLING)
        await system.wait_state(OWNER, request_id, "validating", timeout=20)


async def _history_has(system: System, request_id: str, reason: str) -> bool:
    return reason in await _history(system, request_id)


class TestTimeRunsOut:
    @pytest.fixture
    def system_settings(self) -> dict[str, str]:
        return {"CONTACTS_REQUEST_TTL": "8", "CONTACTS_VETTING_REASK": "3600"}

    async def test_checking_expires_and_frees_the_type(self, system: System, services: Services) -> None:
        await feed_world(system)
        await services.terminate(BILLING)
        request_id = await system.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
        view: dict[str, Any] = await system.wait_state(OWNER, request_id, "expired", timeout=30)
        assert view["state"] == "expired"
        assert "the billing check did not answer in time" in await _history(system, request_id)
        await system.wait_mails(email_of(OWNER), "expired")
        # Free again: a new request for the same service and type is taken.
        assert (await system.submit(OWNER, HOSTING, {"tech": WEBMASTER})).status_code == 202

    async def test_applying_fails_and_keeps_the_contact(self, system: System, services: Services) -> None:
        await feed_world(system)
        request_id = await system.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
        tokens = {nic: (await system.token_mail(email_of(nic), request_id)).token for nic in (OWNER, WEBMASTER)}
        await services.terminate(BILLING)
        for nic, token in tokens.items():
            assert (await system.act(nic, request_id, "accept", token)).status_code == 200
        await system.wait_state(OWNER, request_id, "failed", timeout=30)
        assert "the billing check did not answer in time to apply the change" in await _history(system, request_id)
        assert (await system.contacts_of(OWNER, HOSTING) or {})["tech"] == OLD_TECH
        await system.wait_mails(email_of(WEBMASTER), "failed")

"""A message nobody can receive yet is not lost: in a fresh namespace where the requests service
starts before the billing check has ever run, `contact_change.requested` has no queue bound to
its routing key, so RabbitMQ returns it. It stays in the requests service's outbox (counted in
`contacts_messages_unroutable_total` and logged), the request waits in `checking`, and it goes
on as soon as the billing check starts and binds its queue."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from contacts_shared.contracts import AccountUpserted, ServiceUpserted, Zone
from contacts_tools.mailsink import MailSink
from prometheus_client.parser import text_string_to_metric_families
from seed import BILLER, HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of
from support import (
    ARTIFACTS,
    System,
    consumer_count,
    drop_namespace,
    eventually,
    free_port,
    service_env,
    spawn,
    stop,
)

REQUESTED = "contact_change.requested"


@pytest.fixture
async def system(infrastructure: tuple[str, str], request: pytest.FixtureRequest) -> AsyncIterator[System]:
    """A fresh namespace with the requests service and the notifier running, and no billing
    check yet (the test starts it); everything is stopped and dropped afterwards."""
    database_url, amqp_url = infrastructure
    sink = MailSink("127.0.0.1", free_port(), free_port())
    sink.start()
    log_dir = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    http_port, metrics_port = free_port(), free_port()
    system = System(
        namespace=f"t{uuid.uuid4().hex[:10]}_",
        database_url=database_url,
        amqp_url=amqp_url,
        api_url=f"http://127.0.0.1:{http_port}",
        jwt_secret=uuid.uuid4().hex,
        sink=sink,
        log_dir=log_dir,
    )
    system.env = service_env(system, http_port)
    system.service_env["contacts-requests"] = {"CONTACTS_METRICS_PORT": str(metrics_port)}
    try:
        for name in ("contacts-requests", "contacts-notifier"):
            spawn(system, name)
        await consuming(system, "requests", "notifier")
        yield system
    finally:
        await stop(system)
        sink.stop()
        await drop_namespace(database_url, amqp_url, system.namespace)


async def consuming(system: System, *queues: str) -> None:
    """Until each of `queues` has a consumer (the service bound it) and the API is ready."""

    async def ready() -> bool:
        for name, process in system.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{system.logs()[-5000:]}")
        for queue in queues:
            if await consumer_count(system.amqp_url, f"{system.namespace}{queue}") < 1:
                return False
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"{system.api_url}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(ready, timeout=60, what=f"{', '.join(queues)} to consume")


async def returns_counted(system: System) -> float:
    """contacts_messages_unroutable_total{routing_key="contact_change.requested"} of the requests service."""
    port = system.service_env["contacts-requests"]["CONTACTS_METRICS_PORT"]
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "contacts_messages_unroutable_total" and sample.labels == {"routing_key": REQUESTED}:
                return sample.value
    return 0.0


async def test_a_submission_waits_in_checking_until_the_billing_check_first_starts(system: System) -> None:
    people = (OWNER, WEBMASTER, OLD_TECH, BILLER)
    await system.publish(
        *[AccountUpserted(nic=nic, email=email_of(nic), zone=Zone.EU) for nic in people],
        ServiceUpserted(service=HOSTING, type="hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER),
    )
    await eventually(lambda: system.contacts_of(OWNER, HOSTING), what="the hosting plan to be known")

    request_id = await system.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})

    # Returned, kept and retried: counted more than once, while its row stays in the outbox.
    await eventually(lambda: _at_least(system, 2), timeout=30, what="two returns of contact_change.requested counted")
    rows = await system.sql("requests", "SELECT message_id, routing_key, body FROM outbox ORDER BY id")
    # The rest of its batch (the `checking` announcement, for the notifier) went out.
    assert [r["routing_key"] for r in rows] == [REQUESTED], rows
    (row,) = rows
    assert json.loads(row["body"])["data"]["request_id"] == request_id
    assert (await system.request(OWNER, request_id))["state"] == "checking"

    # A warning names the routing key and the message id, never the body.
    warnings = [line for line in system.logs().splitlines() if "message unroutable, kept in the outbox" in line]
    assert warnings, system.logs()[-3000:]
    assert all(REQUESTED in line and str(row["message_id"]) in line for line in warnings), warnings
    assert not any(WEBMASTER in line or '"data"' in line for line in warnings), warnings

    # The billing check starts for the first time: its queue is bound, the retry routes.
    spawn(system, "contacts-billing-check")
    await consuming(system, "billing_check")
    await system.wait_state(OWNER, request_id, "validating", timeout=30)
    for nic in (OWNER, WEBMASTER):
        await system.token_mail(email_of(nic), request_id)

    async def drained() -> bool:
        return not await system.sql("requests", "SELECT 1 FROM outbox")

    await eventually(drained, timeout=30, what="the requests outbox to drain")


async def _at_least(system: System, count: float) -> bool:
    return await returns_counted(system) >= count

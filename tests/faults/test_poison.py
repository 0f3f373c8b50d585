"""Poison on every service queue while flows are in flight: each poison lands in that service's
dead-letter queue with a reason, the consumer keeps going, and the flows are not held up.

(tests/e2e/test_messages.py covers single malformed bodies on the requests queue; this adds
every queue, the 10 MB body, the missing message_id and the concurrent load.)"""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import pytest
from contacts_shared.consumer import MAX_BODY_BYTES
from contacts_shared.contracts import AccountUpserted, InvoicePaid, Zone, envelope_for
from faults.audit import queues_drained
from faults.conftest import OwnInfrastructure
from faults.scenario import Scenario, run_scenario
from support import System, dead_letters, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# For each service: a routing key only it consumes, and a valid envelope of that type.
CONSUMED = {
    "requests": (
        "account.upserted",
        envelope_for(AccountUpserted(nic="pp00001-ovh", email="p@example.test", zone=Zone.EU)),
    ),
    "billing_check": (
        "invoice.paid",
        envelope_for(InvoicePaid(invoice_id="inv-poison")),
    ),
    "notifier": ("contact_change.validation_requested", None),
}


def poisons(service: str) -> list[tuple[str, str, bytes, str | None, str]]:
    """(name, routing key or '' for straight to the queue, body, AMQP message id, expected reason)."""
    key, valid = CONSUMED[service]
    sample = (
        valid.model_dump(mode="json")
        if valid
        else {
            "message_id": str(uuid.uuid4()),
            "type": key,
            "version": 1,
            "occurred_at": "2026-01-01T00:00:00Z",
            "data": {},
        }
    )
    wrong_payload = {**sample, "data": {"nic": 42}}
    no_message_id = {k: v for k, v in sample.items() if k != "message_id"}
    huge = {**sample, "data": {**sample["data"], "padding": "x" * (10 * 1024 * 1024)}}
    return [
        (
            "invalid JSON",
            key,
            b"{this is not json",
            str(uuid.uuid4()),
            "invalid envelope",
        ),
        (
            "wrong payload",
            key,
            json.dumps(wrong_payload).encode(),
            str(uuid.uuid4()),
            f"invalid {key} data",
        ),
        (
            "unknown routing key",
            "",
            json.dumps(sample).encode(),
            str(uuid.uuid4()),
            "does not consume routing key",
        ),
        (
            "10 MB body",
            key,
            json.dumps(huge).encode(),
            str(uuid.uuid4()),
            f"larger than {MAX_BODY_BYTES} bytes",
        ),
        (
            "missing message_id",
            key,
            json.dumps(no_message_id).encode(),
            None,
            "message_id",
        ),
    ]


async def publish_poison(system: System) -> dict[str, list[tuple[str, str, str]]]:
    """Publish every poison on every queue; returns {service: [(name, AMQP message id, expected reason)]}."""
    sent: dict[str, list[tuple[str, str, str]]] = {}
    connection = await aio_pika.connect(system.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{system.namespace}contacts")
        for service in CONSUMED:
            for name, key, body, message_id, reason in poisons(service):
                message = aio_pika.Message(
                    body,
                    message_id=message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                if key:
                    await exchange.publish(message, routing_key=key)
                else:  # straight into the service's queue, under a routing key nobody binds
                    await channel.default_exchange.publish(message, routing_key=f"{system.namespace}{service}")
                sent.setdefault(service, []).append((name, message_id or "", reason))
    return sent


async def test_poison_on_every_queue_is_dead_lettered_and_nothing_waits(
    faulty_system: System, own_infrastructure: OwnInfrastructure
) -> None:
    sent: dict[str, list[tuple[str, str, str]]] = {}

    async def poison(scenario: Scenario) -> None:
        nonlocal sent
        await scenario.in_flight()
        async with scenario.fault(noticeable=False):
            sent = await publish_poison(faulty_system)

    result = await run_scenario(faulty_system, "poison on every queue", 100, poison)
    assert result.problems == []

    async def all_dead_lettered() -> bool:
        queues = await asyncio.to_thread(own_infrastructure.rabbit.queues, faulty_system.namespace)
        return all(queues.get(f"{faulty_system.namespace}{s}.dlq", (0, 0))[0] == len(p) for s, p in sent.items())

    await eventually(all_dead_lettered, timeout=60, what="every poison in its dead-letter queue")
    for service, expected in sent.items():
        letters = await dead_letters(faulty_system, service, take=True)
        reasons = {
            str((m.headers or {}).get("x-original-message-id", "")): str((m.headers or {}).get("x-reason", ""))
            for m in letters
        }
        assert len(letters) == len(expected), reasons
        # The client library gives a message without an id one of its own: that is the one not sent.
        (unnamed,) = set(reasons) - {message_id for _, message_id, _ in expected}
        for name, message_id, reason in expected:
            got = reasons[message_id or unnamed]
            assert reason in got, f"{service} / {name}: reason {got!r}, expected {reason!r}"
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


FLAKY_NIC = "fl00001-flaky"
# A message the requests service fails to handle 5 times, then handles: a trigger of the test's own
# raises on the first 5 writes of one account (a sequence counts them: it survives the rollback).
FLAKY_TRIGGER = (
    "CREATE SEQUENCE flaky_attempts",
    """CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
        IF nextval('flaky_attempts') <= 5 THEN
            RAISE EXCEPTION 'flaky: failing on purpose';
        END IF;
        RETURN NEW;
    END $$""",
    f"""CREATE TRIGGER flaky BEFORE INSERT OR UPDATE ON account_rows
    FOR EACH ROW WHEN (NEW.nic = '{FLAKY_NIC}') EXECUTE FUNCTION flaky()""",
)


async def flow_seconds_p99(system: System, tag: str) -> float:
    """p99 of submission → final state of the requests of the flows tagged `tag`."""
    rows = await system.sql(
        "requests",
        "SELECT extract(epoch FROM max(h.at) - min(h.at)) AS seconds FROM history h"
        " JOIN contact_changes c ON c.id = h.request_id WHERE c.service LIKE $1 GROUP BY h.request_id",
        f"%.{tag}.web-hosting",
    )
    seconds = sorted(float(r["seconds"]) for r in rows)
    return seconds[min(len(seconds) - 1, round(0.99 * len(seconds)))]


async def test_a_message_failing_5_times_while_100_flows_pass(
    faulty_system: System, own_infrastructure: OwnInfrastructure
) -> None:
    """The failing message waits its turns in the retry queue, not in front of the others: the
    100 flows beside it take as long as 100 flows with nothing failing, just before."""
    for statement in FLAKY_TRIGGER:
        await faulty_system.sql("requests", statement)
    baseline = await run_scenario(faulty_system, "100 flows, nothing failing (for the next row)", 100, tag="base")
    assert baseline.problems == []

    async def flaky_message(scenario: Scenario) -> None:
        await scenario.in_flight(0.1, 0.3)
        async with scenario.fault(noticeable=False):
            await faulty_system.publish(AccountUpserted(nic=FLAKY_NIC, email="flaky@example.test", zone=Zone.EU))

    result = await run_scenario(faulty_system, "a message failing 5 times, 100 flows", 100, flaky_message, tag="beside")
    assert result.problems == []

    async def handled() -> bool:
        return bool(await faulty_system.sql("requests", "SELECT 1 FROM accounts WHERE nic = $1", FLAKY_NIC))

    await eventually(handled, timeout=120, what="the flaky message to be handled at its 6th attempt")
    (attempts,) = await faulty_system.sql("requests", "SELECT last_value FROM flaky_attempts")
    assert attempts["last_value"] == 6
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)  # its dead-letter queue is empty
    before, beside = await flow_seconds_p99(faulty_system, "base"), await flow_seconds_p99(faulty_system, "beside")
    print(f"\n[a message failing 5 times] p99 submission → final: {before:.2f} s alone, {beside:.2f} s beside it")
    # Queued behind it, they would wait its five 5 s turns in the retry queue.
    assert beside <= 1.5 * before + 1.0, f"p99 {beside:.2f} s beside the failing message, {before:.2f} s without"

"""Longer and nastier faults: the database away for a minute and for five, the broker away for
two, the billing check away for longer than a request waits before asking it again, a recipient
the mail server refuses for good, the notifier's clock off. The same audit as
tests/faults/test_faults.py: nothing lost, stuck, doubled or missing. The outages of two minutes
and more are marked `long`: `./scripts/test -m long` runs them."""

from __future__ import annotations

import glob
import re
from datetime import UTC, datetime

import pytest
from faults.audit import queues_drained
from faults.conftest import OwnInfrastructure
from faults.flows import MIXED
from faults.scenario import Scenario, kill_and_restart, run_scenario
from support import System, eventually

LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", re.MULTILINE)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FLOWS = 200
REASK_SECONDS = 10


# Outages of the servers the services depend on: (server, seconds down, marked `long`). The
# default run has the database away for 60 s, past a failing message's whole retry budget (8
# attempts 5 s apart, about 35 s), and the broker for 20 s, four times its longest budget (a
# publish confirm, 5 s; the reconnect and outbox back-offs, capped at 5 s). `-m long` adds the
# database away for 5 min and the broker for 2.
OUTAGES = {
    "PostgreSQL down 60 s": ("postgres", 60, False),
    "RabbitMQ down 20 s": ("rabbit", 20, False),
    "PostgreSQL down 5 min": ("postgres", 300, True),
    "RabbitMQ down 2 min": ("rabbit", 120, True),
}


@pytest.mark.parametrize(
    "fault", [pytest.param(fault, marks=[pytest.mark.long] if long else []) for fault, (_, _, long) in OUTAGES.items()]
)
async def test_an_outage_is_waited_out(faulty_system: System, own_infrastructure: OwnInfrastructure, fault: str) -> None:
    server, seconds, _ = OUTAGES[fault]

    async def outage(scenario: Scenario) -> None:
        await scenario.in_flight()
        async with scenario.fault():
            await getattr(own_infrastructure, server).down_for(seconds)

    result = await run_scenario(faulty_system, fault, FLOWS, outage, flow_timeout=seconds + 300)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


# Shortened through its setting: requests waiting REASK_SECONDS for the verdict ask again.
@pytest.mark.parametrize("service_settings", [{"CONTACTS_VETTING_REASK": str(REASK_SECONDS)}])
async def test_billing_check_down_longer_than_the_reask(
    faulty_system: System, own_infrastructure: OwnInfrastructure, service_settings: dict[str, str]
) -> None:
    async def billing_check_away(scenario: Scenario) -> None:
        await scenario.in_flight()
        async with scenario.fault():
            await kill_and_restart(faulty_system, "contacts-billing-check", down_for=3 * REASK_SECONDS)

    result = await run_scenario(faulty_system, f"billing-check down {3 * REASK_SECONDS} s (re-ask {REASK_SECONDS} s)", FLOWS, billing_check_away)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)
    asked_again = await faulty_system.sql("requests", "SELECT count(*) AS n FROM contact_changes WHERE vetting_asked_at IS NOT NULL")
    assert asked_again[0]["n"] > 0, "no request waited long enough to ask again: the fault missed"


async def test_smtp_refusing_one_recipient_for_good(faulty_system: System, own_infrastructure: OwnInfrastructure) -> None:
    result = await run_scenario(faulty_system, "SMTP refusing one recipient for good", FLOWS, unreachable=1)
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)

    async def given_up() -> list[str] | None:
        failed = sorted(r["kind"] for r in await faulty_system.sql("notifier", "SELECT kind FROM mails WHERE state = 'failed'"))
        return failed if len(failed) >= 2 else None

    # Its code, then its `cancelled`, each after CONTACTS_SMTP_MAX_REFUSALS refusals.
    assert await eventually(given_up, timeout=30, what="both emails to the refused address given up") == ["outcome", "token"]


@pytest.mark.parametrize("offset", [-5, 5], ids=["5 s behind", "5 s ahead"])
async def test_notifier_clock_off(faulty_system: System, own_infrastructure: OwnInfrastructure, offset: int) -> None:
    """Whether a code is current never depends on the notifier's clock: every emailed code works,
    and a code from before a resend (a fifth of the flows resend) never does."""
    if LIBFAKETIME is None:
        pytest.fail("libfaketime is not installed: apt-get install libfaketime (scripts/test does it as root)")
    faulty_system.service_env["contacts-notifier"] = {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME": f"{offset:+d}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts and sleeps keep real time
    }
    await kill_and_restart(faulty_system, "contacts-notifier", down_for=0)
    log = (faulty_system.log_dir / "contacts-notifier.log").read_text()
    logged = datetime.fromisoformat(LOG_TIME.findall(log)[-1]).replace(tzinfo=UTC)
    assert abs((logged - datetime.now(UTC)).total_seconds() - offset) < 2, "the notifier's clock is not off"

    result = await run_scenario(
        faulty_system, f"notifier clock {abs(offset)} s {'behind' if offset < 0 else 'ahead'}", FLOWS,
        kinds=MIXED + ("resent",) * 5,
    )
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)

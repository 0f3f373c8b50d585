"""Graceful shutdown: each service, sent SIGTERM while many contact changes are in flight, stops
taking messages and HTTP requests, finishes what it holds and exits with status 0 within 10 s;
started again, the flows all complete, exactly once (contacts right, no email twice)."""

from __future__ import annotations

import asyncio
import time

import pytest
from support import System, eventually
from workload import Services, assert_each_flow_done_exactly_once, drive, feed_flows

pytestmark = pytest.mark.e2e

FLOWS = 16
STOP_LIMIT_SECONDS = 10.0


async def test_sigterm_mid_load_loses_nothing_and_exits_in_time(system: System, services: Services) -> None:
    flows = await feed_flows(system, FLOWS)
    started = time.monotonic()
    # The confirmers read their email together, once every token email is in: their accepts
    # then arrive at once, and requests is stopped while it handles them (however fast the
    # rest went on this machine).
    read_mail = asyncio.Event()
    driving = [asyncio.create_task(drive(system, flow, read_mail=read_mail)) for flow in flows]

    async def submitted() -> bool:
        return (await system.sql("requests", "SELECT count(*) AS n FROM contact_changes"))[0]["n"] > 0

    def token_mails() -> int:
        return len(system.mails(subject="please confirm"))

    async def some_token_mails() -> bool:
        return token_mails() >= 1

    async def every_token_mail_then_accepts() -> bool:
        if token_mails() < 2 * FLOWS:
            return False
        read_mail.set()
        accepted = await system.sql("requests", "SELECT count(*) AS n FROM confirmers WHERE state = 'accepted'")
        return accepted[0]["n"] > 0

    # Each service is stopped while its part of the work is going on: billing-check once requests
    # are being vetted, the notifier while it sends the token emails, requests while the
    # confirmers accept (and its consumers apply the changes).
    stops: dict[str, tuple[int, float, int]] = {}
    for name, busy in (
        ("contacts-billing-check", submitted),
        ("contacts-notifier", some_token_mails),
        ("contacts-requests", every_token_mail_then_accepts),
    ):
        await eventually(busy, timeout=90, what=f"work for {name}")
        done = sum(task.done() for task in driving)
        assert done < FLOWS, f"the flows finished before {name} could be stopped mid-load"
        status, seconds = await services.restart(name)
        stops[name] = (status, seconds, done)
    await asyncio.gather(*driving)
    elapsed = time.monotonic() - started

    for name, (status, seconds, _) in stops.items():
        assert status == 0, f"{name} exited with {status} on SIGTERM"
        assert seconds < STOP_LIMIT_SECONDS, f"{name} took {seconds:.2f}s to stop"
    log = system.logs()
    assert log.count("stop signal received") == 3 and log.count('"stopped"') + log.count("] stopped") >= 3
    await assert_each_flow_done_exactly_once(system, flows)
    print(  # the numbers for the report (pytest -s)
        f"\n{FLOWS} flows done in {elapsed:.1f}s; stops (exit status, seconds, flows done at SIGTERM): {stops}"
    )

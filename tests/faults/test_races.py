"""Races the service must settle: answers at the same instant, concurrent submissions."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from contacts_shared.contracts import AccountUpserted, Zone
from faults.audit import queues_drained
from faults.conftest import OwnInfrastructure
from faults.flows import Flow, email_of, feed, tokens_mailed
from faults.scenario import run_scenario
from support import System, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_both_confirmers_answer_at_the_same_instant_100_times(
    faulty_system: System, own_infrastructure: OwnInfrastructure
) -> None:
    """Accept + accept (applied once, one done email each) and accept + decline (declined)."""
    result = await run_scenario(
        faulty_system,
        "both confirmers answer at once x100",
        100,
        kinds=("done",) * 4 + ("declined",),
        answer_together=True,
    )
    assert result.problems == []
    await queues_drained(faulty_system, own_infrastructure.rabbit.queues)


async def test_twenty_concurrent_submissions_for_one_service_and_type(
    faulty_system: System,
) -> None:
    flow = Flow(0, "done", "ovh")
    await feed(faulty_system, [flow])
    candidates = [f"nw{i:05d}-ovh" for i in range(1, 21)]
    # Twenty different new contacts, each an account of the same zone.
    await faulty_system.publish(*[AccountUpserted(nic=nic, email=email_of(nic), zone=Zone.EU) for nic in candidates])

    async def known() -> bool:
        (row,) = await faulty_system.sql("requests", "SELECT count(*) AS n FROM accounts")
        return row["n"] == 4 + len(candidates)

    await eventually(known, timeout=60, what="the candidates' accounts")
    responses = await asyncio.gather(
        *(faulty_system.submit(flow.nic("owner"), flow.service, {"tech": nic}) for nic in candidates)
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: 1, 409: 19}, statuses
    (winner,) = [r.json()["items"][0]["id"] for r in responses if r.status_code == 202]
    assert all(r.json()["open_request_id"] == winner for r in responses if r.status_code == 409)
    rows = await faulty_system.sql("requests", "SELECT id FROM contact_changes")
    assert [str(r["id"]) for r in rows] == [winner]


async def test_accept_and_decline_with_the_same_token_at_once(
    faulty_system: System,
) -> None:
    """One confirmer clicks both buttons at once, 20 times: exactly one answer counts."""
    flows = [Flow(i, "done", "ovh") for i in range(20)]
    await feed(faulty_system, flows)
    ids = []
    for flow in flows:
        ids.append(await faulty_system.submit_one(flow.nic("owner"), flow.service, {"tech": flow.nic("new")}))
    outcomes = Counter()
    for flow, request_id in zip(flows, ids, strict=True):
        tokens = await eventually(
            lambda f=flow, r=request_id: tokens_mailed(faulty_system, r, email_of(f.nic("new"))),
            timeout=60,
            what="the new contact's token",
        )
        token = tokens[-1]
        accept, decline = await asyncio.gather(
            faulty_system.act(flow.nic("new"), request_id, "accept", token),
            faulty_system.act(flow.nic("new"), request_id, "decline", token),
        )
        codes = sorted([accept.status_code, decline.status_code])
        assert codes[0] == 200 and codes[1] in (409, 422), (accept.text, decline.text)
        outcomes["accepted" if accept.status_code == 200 else "declined"] += 1
        view = await faulty_system.request(flow.nic("owner"), request_id)
        confirmer = {c["nic"]: c["state"] for c in view["confirmers"]}[flow.nic("new")]
        if accept.status_code == 200:
            assert view["state"] == "validating" and confirmer == "accepted"
        else:
            assert confirmer == "declined"
            await faulty_system.wait_state(flow.nic("owner"), request_id, "declined", timeout=30)
    print(f"\n[accept vs decline, same token] {dict(outcomes)}")
    assert sum(outcomes.values()) == 20

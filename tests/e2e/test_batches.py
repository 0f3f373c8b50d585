"""Batches, against the running services, the bus and a real SMTP sink: one submission naming 30
services, one email and one code per confirmer answering them all, each request ending on its
own; refusals said per service without blocking the others; the code of a batch answering one
of its requests alone; a batch submitted by message, idempotently."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from contacts_shared.contracts import (
    BatchSubmitEntry,
    ContactChanges,
    ContactChangeSubmitBatch,
    ServiceUpserted,
)
from seed import (
    BILLER,
    CANADIAN,
    HOSTING,
    OLD_TECH,
    OWNER,
    STRANGER,
    WEBMASTER,
    email_of,
)
from support import Mail, System, eventually

pytestmark = pytest.mark.e2e

BATCH_LINK = re.compile(r"/batches/([0-9a-f-]{36})\?token=([A-Za-z0-9_\-%]+)")
SHOPS = [f"shop-{n:02d}.example" for n in range(30)]


async def with_shops(world: System, shops: list[str]) -> None:
    """The owner administers each shop; the old technical contact runs them."""
    await world.publish(*(ServiceUpserted(service=s, type="hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER) for s in shops))
    await eventually(lambda: world.contacts_of(OWNER, shops[-1]), what="the last shop to be known")


async def submit_batch(world: System, nic: str, changes: list[dict[str, str]], **headers: str) -> httpx.Response:
    async with world.api(nic) as client:
        return await client.post("/v1/contact-change-batches", json={"changes": changes}, headers=headers)


async def batch_mail(world: System, nic: str, batch_id: str) -> tuple[Mail, str]:
    async def arrived() -> list[Mail] | None:
        found = [m for m in world.mails(email_of(nic), "please confirm") if batch_id in m.body]
        return found or None

    (mail,) = await eventually(arrived, what=f"the batch's email to {nic}")
    match = BATCH_LINK.search(mail.body)
    assert match and match.group(1) == batch_id, mail.body
    return mail, match.group(2)


async def answer_batch(world: System, nic: str, batch_id: str, action: str, token: str) -> httpx.Response:
    async with world.api(nic) as client:
        return await client.post(f"/v1/contact-change-batches/{batch_id}/{action}", json={"token": token})


async def states(world: System, ids: list[str]) -> dict[str, str]:
    return {i: (await world.request(OWNER, i))["state"] for i in ids}


async def test_a_batch_of_30_services_is_confirmed_with_one_code_per_confirmer(world: System) -> None:
    await with_shops(world, SHOPS)
    response = await submit_batch(world, OWNER, [{"service": s, "tech": WEBMASTER} for s in SHOPS])
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    batch_id, ids = answer["batch_id"], [item["id"] for item in answer["items"]]
    assert answer["refused"] == [] and len(ids) == 30
    assert {item["service"] for item in answer["items"]} == set(SHOPS)
    assert all(item["batch_id"] == batch_id and item["state"] == "checking" for item in answer["items"])

    _, owner_code = await batch_mail(world, OWNER, batch_id)
    webmaster_mail, webmaster_code = await batch_mail(world, WEBMASTER, batch_id)
    assert owner_code != webmaster_code
    assert all(s in webmaster_mail.body for s in SHOPS) and "30 contact changes" in webmaster_mail.subject
    # One email each for the 30 requests, not one per request.
    assert [m for m in world.mails(email_of(WEBMASTER), "please confirm") if BATCH_LINK.search(m.body) is None] == []

    response = await answer_batch(world, WEBMASTER, batch_id, "accept", webmaster_code)
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 30
    assert (await answer_batch(world, OWNER, batch_id, "accept", "not-the-code")).status_code == 422
    response = await answer_batch(world, OWNER, batch_id, "accept", owner_code)
    assert response.status_code == 200, response.text

    async def all_done() -> bool:
        return set((await states(world, ids)).values()) == {"done"}

    await eventually(all_done, timeout=30, what="the 30 changes applied")
    for shop in SHOPS:
        assert (await world.contacts_of(WEBMASTER, shop) or {}).get("tech") == WEBMASTER
    # Nothing waits any more: answering again is a conflict.
    assert (await answer_batch(world, OWNER, batch_id, "accept", owner_code)).status_code == 409
    # A stranger sees no batch.
    async with world.api(STRANGER) as client:
        assert (await client.get(f"/v1/contact-change-batches/{batch_id}")).status_code == 404


async def test_a_batch_with_refusals_creates_the_rest_and_says_why_for_each(world: System) -> None:
    shops = SHOPS[:3]
    await with_shops(world, shops)
    changes = [
        {"service": shops[0], "tech": WEBMASTER},
        {"service": shops[1], "tech": CANADIAN},  # another zone
        {"service": "nothing.example", "billing": WEBMASTER},  # not a service of the owner
        {"service": shops[2], "tech": WEBMASTER, "billing": WEBMASTER},
        {"service": HOSTING, "tech": OLD_TECH},  # already the technical contact
    ]
    response = await submit_batch(world, OWNER, changes, **{"Idempotency-Key": "batch-with-refusals"})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert sorted((i["service"], i["type"]) for i in answer["items"]) == [
        (shops[0], "tech"), (shops[2], "billing"), (shops[2], "tech"),
    ]  # fmt: skip
    refused = {(r["service"], r["type"]): r["problem"] for r in answer["refused"]}
    assert set(refused) == {(shops[1], "tech"), ("nothing.example", "billing"), (HOSTING, "tech")}
    assert refused[(shops[1], "tech")]["title"] == "Different zone" and refused[(shops[1], "tech")]["status"] == 422
    assert refused[("nothing.example", "billing")]["status"] == 404
    assert refused[(HOSTING, "tech")]["errors"] == [{"field": "tech", "message": refused[(HOSTING, "tech")]["detail"]}]

    # The same key answers the same, creating nothing more.
    again = await submit_batch(world, OWNER, changes, **{"Idempotency-Key": "batch-with-refusals"})
    assert again.json() | {"items": None} == answer | {"items": None}
    assert [i["id"] for i in again.json()["items"]] == [i["id"] for i in answer["items"]]

    # The batch's code also answers one of its requests on its own.
    batch_id = answer["batch_id"]
    _, code = await batch_mail(world, WEBMASTER, batch_id)
    one = next(i["id"] for i in answer["items"] if i["service"] == shops[0])
    assert (await world.act(WEBMASTER, one, "accept", code)).status_code == 200
    response = await answer_batch(world, WEBMASTER, batch_id, "decline", code)
    assert response.status_code == 200, response.text
    final = await states(world, [i["id"] for i in answer["items"]])
    # The new billing contact has no payment method: that request was refused by the billing check
    # on its own, and the batch's email named the other two only.
    assert final[one] == "validating" and sorted(final.values()) == ["declined", "rejected", "validating"]


async def test_every_change_refused_makes_no_batch(world: System) -> None:
    response = await submit_batch(world, OWNER, [{"service": "nothing.example", "tech": WEBMASTER}])
    assert response.status_code == 202, response.text
    assert response.json()["batch_id"] is None and response.json()["items"] == []
    assert [r["problem"]["status"] for r in response.json()["refused"]] == [404]
    bad = await submit_batch(world, OWNER, [{"service": HOSTING}])
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("changes.0")


async def test_a_batch_by_message_announces_each_outcome_with_its_key_and_once_per_key(world: System) -> None:
    shops = SHOPS[:2]
    await with_shops(world, shops)
    batch = ContactChangeSubmitBatch(
        requester=OWNER,
        changes=[
            BatchSubmitEntry(service=shops[0], changes=ContactChanges(tech=WEBMASTER)),
            BatchSubmitEntry(service=shops[1], changes=ContactChanges(tech=WEBMASTER)),
            BatchSubmitEntry(service="nothing.example", changes=ContactChanges(tech=WEBMASTER)),
        ],
        idempotency_key="agency-migration-1",
    )
    await world.publish(batch)
    assert world.capture is not None
    for shop in shops:
        await world.capture.wait_for("contact_change.state_changed", service=shop, state="checking", idempotency_key="agency-migration-1")
    refused = await world.capture.wait_for("contact_change.state_changed", service="nothing.example", idempotency_key="agency-migration-1")
    assert refused["data"]["state"] == "rejected"
    (item,) = (await world.capture.wait_for("contact_change.batch_validation_requested"))["data"]["items"][:1]
    _, code = await batch_mail(world, WEBMASTER, (await world.request(OWNER, str(item["request_id"])))["batch_id"])
    assert code

    # The same key again: the same announcements, no new request.
    await world.publish(batch)

    async def announced_twice() -> bool:
        bodies = [b for b in world.capture.bodies("contact_change.state_changed") if b["data"]["service"] == "nothing.example"]
        return len(bodies) == 2

    await eventually(announced_twice, what="the refusal announced again")
    assert len({b["data"]["request_id"] for b in world.capture.bodies("contact_change.state_changed") if b["data"]["service"] == "nothing.example"}) == 1
    rows = await world.sql("requests", "SELECT count(*) AS n FROM contact_changes WHERE service = ANY($1)", shops)
    assert rows[0]["n"] == 2

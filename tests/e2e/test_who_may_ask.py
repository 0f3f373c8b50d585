"""Spec section 2, row by row, and every refusal: through the HTTP API, the broker and real email."""

from __future__ import annotations

import json

import aio_pika
import pytest
from contacts_shared.contracts import InvoiceIssued
from seed import (
    ACCOUNTANT,
    BILLER,
    CANADIAN,
    HOSTING,
    OLD_TECH,
    OWNER,
    STRANGER,
    WEBMASTER,
    email_of,
)
from support import System, eventually

pytestmark = pytest.mark.e2e


async def confirm(system: System, request_id: str, *nics: str) -> None:
    for nic in nics:
        mail = await system.token_mail(email_of(nic), request_id)
        response = await system.act(nic, request_id, "accept", mail.token)
        assert response.status_code == 200, response.text


async def assert_done_mails(system: System, *nics: str) -> None:
    for nic in nics:
        await system.wait_mails(email_of(nic), "contact change done")


async def assert_told_beforehand(system: System, nic: str, request_id: str) -> None:
    """`nic` got one heads-up about the request, with no code in it, and nothing to confirm."""
    (heads_up,) = await system.wait_mails(email_of(nic), "heads-up")
    assert request_id in heads_up.body and "contact our support" in heads_up.body
    assert "token=" not in heads_up.body and system.mails(email_of(nic), "please confirm") == []


# --- the table: who may change what, who confirms, who is told ---------------------------------------


async def test_admin_names_another_tech_both_confirm_previous_is_told(world: System) -> None:
    completed = await _listen(world, "contact_change.completed")
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})

    owner_mail = await world.token_mail(email_of(OWNER), request_id)
    webmaster_mail = await world.token_mail(email_of(WEBMASTER), request_id)
    assert owner_mail.token != webmaster_mail.token
    await assert_told_beforehand(world, OLD_TECH, request_id)  # the previous contact confirms nothing
    assert "in your place" in world.mails(email_of(OLD_TECH), "heads-up")[0].body

    response = await world.act(WEBMASTER, request_id, "accept", webmaster_mail.token)
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["state"] == "validating"
    assert {c["nic"]: c["state"] for c in view["confirmers"]} == {OWNER: "pending", WEBMASTER: "accepted"}

    response = await world.act(OWNER, request_id, "accept", owner_mail.token)
    assert response.status_code == 200, response.text
    done = await world.wait_state(OWNER, request_id, "done")
    assert done["history"][0]["state"] == "checking"
    assert {"validating", "applying", "done"} <= {h["state"] for h in done["history"]}
    assert await world.contacts_of(OWNER, HOSTING) == {"admin": OWNER, "tech": WEBMASTER, "billing": BILLER}
    await assert_done_mails(world, OWNER, WEBMASTER, OLD_TECH)

    message = await eventually(completed.get_nowait_or_none, what="contact_change.completed")
    assert message["data"] | {"completed_at": None} == {
        "request_id": request_id, "service": HOSTING, "type": "tech",
        "from": OLD_TECH, "to": WEBMASTER, "completed_at": None,
    }  # fmt: skip
    await completed.close()


async def test_admin_takes_over_tech_alone_previous_is_told(world: System) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": OWNER})
    view = await world.wait_state(OWNER, request_id, "validating")
    assert [c["nic"] for c in view["confirmers"]] == [OWNER]
    await assert_told_beforehand(world, OLD_TECH, request_id)
    await confirm(world, request_id, OWNER)
    await world.wait_state(OWNER, request_id, "done")
    assert (await world.contacts_of(OWNER, HOSTING))["tech"] == OWNER
    await assert_done_mails(world, OWNER, OLD_TECH)


async def test_admin_hands_admin_to_another_both_confirm(world: System) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"admin": ACCOUNTANT})
    await confirm(world, request_id, ACCOUNTANT, OWNER)
    await world.wait_state(OWNER, request_id, "done")
    assert (await world.contacts_of(ACCOUNTANT, HOSTING))["admin"] == ACCOUNTANT
    await assert_done_mails(world, OWNER, ACCOUNTANT)
    assert world.mails(subject="heads-up") == []  # the one replaced asked for it


async def test_tech_replaces_himself(world: System) -> None:
    request_id = await world.submit_one(OLD_TECH, HOSTING, {"tech": WEBMASTER})
    view = await world.wait_state(OLD_TECH, request_id, "validating")
    assert sorted(c["nic"] for c in view["confirmers"]) == sorted([OLD_TECH, WEBMASTER])
    # The service's admin is told at once, not only once it is done.
    await assert_told_beforehand(world, OWNER, request_id)
    assert "asks to hand it over to" in world.mails(email_of(OWNER), "heads-up")[0].body
    await confirm(world, request_id, OLD_TECH, WEBMASTER)
    await world.wait_state(OLD_TECH, request_id, "done")
    assert (await world.contacts_of(OWNER, HOSTING))["tech"] == WEBMASTER
    assert await world.contacts_of(OLD_TECH, HOSTING) is None  # no longer a contact


async def test_billing_replaces_himself_with_a_contact_that_can_pay(world: System) -> None:
    request_id = await world.submit_one(BILLER, HOSTING, {"billing": ACCOUNTANT})
    await assert_told_beforehand(world, OWNER, request_id)
    await confirm(world, request_id, BILLER, ACCOUNTANT)
    await world.wait_state(BILLER, request_id, "done")
    assert (await world.contacts_of(OWNER, HOSTING))["billing"] == ACCOUNTANT


async def test_several_types_at_once_create_one_request_each(world: System) -> None:
    response = await world.submit(OWNER, HOSTING, {"tech": WEBMASTER, "billing": ACCOUNTANT})
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert sorted(i["type"] for i in items) == ["billing", "tech"]


# --- refusals ----------------------------------------------------------------------------------------------


async def _refused(system: System, nic: str, changes: dict[str, str], status: int, field: str | None = None) -> dict:
    response = await system.submit(nic, HOSTING, changes)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    if field:
        assert problem["errors"][0]["field"] == field
    async with system.api(OWNER) as client:
        assert (await client.get("/v1/me/contact-changes")).json()["items"] == []  # nothing created
    return problem


async def test_unknown_nic_is_refused(world: System) -> None:
    problem = await _refused(world, OWNER, {"tech": "zz99999-ovh"}, 422, "tech")
    assert "zz99999-ovh" in problem["detail"]


async def test_malformed_nic_names_the_field(world: System) -> None:
    problem = await _refused(world, OWNER, {"tech": "not a nic"}, 422, "tech")
    assert "NIC" in problem["detail"]


async def test_new_nic_already_holder_is_refused(world: System) -> None:
    await _refused(world, OWNER, {"tech": OLD_TECH.upper()}, 422, "tech")


async def test_other_zone_is_refused(world: System) -> None:
    problem = await _refused(world, OWNER, {"tech": CANADIAN}, 422, "tech")
    assert "zone" in problem["detail"]


async def test_all_or_nothing_when_one_type_is_refused(world: System) -> None:
    await _refused(world, OWNER, {"tech": WEBMASTER, "billing": "zz99999-ovh"}, 422, "billing")


async def test_tech_cannot_change_admin_or_billing(world: System) -> None:
    for changes in ({"admin": WEBMASTER}, {"billing": ACCOUNTANT}):
        problem = await _refused(world, OLD_TECH, changes, 403)
        assert "only replace yourself" in problem["detail"]


async def test_nic_no_contact_of_the_service_gets_404(world: System) -> None:
    await _refused(world, STRANGER, {"tech": WEBMASTER}, 404)
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    async with world.api(STRANGER) as client:
        assert (await client.get(f"/v1/contact-changes/{request_id}")).status_code == 404
        assert (await client.post(f"/v1/contact-changes/{request_id}/cancel")).status_code == 404
        assert (await client.get("/v1/me/contact-changes")).json()["items"] == []


async def test_open_request_for_same_type_is_409_with_its_id(world: System) -> None:
    first = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    response = await world.submit(OWNER, HOSTING, {"tech": ACCOUNTANT})
    assert response.status_code == 409, response.text
    assert response.json()["open_request_id"] == first


async def test_unpaid_invoice_on_the_previous_account_rejects(world: System) -> None:
    await _with_unpaid_invoice(world, OLD_TECH)
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    view = await world.wait_state(OWNER, request_id, "rejected")
    assert "unpaid invoice" in view["reason"] and OLD_TECH in view["reason"]
    (mail,) = await world.wait_mails(email_of(OWNER), "refused")
    assert "unpaid invoice" in mail.body
    assert world.mails(email_of(WEBMASTER)) == []


async def test_unpaid_invoice_on_the_new_account_rejects(world: System) -> None:
    await _with_unpaid_invoice(world, WEBMASTER)
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    view = await world.wait_state(OWNER, request_id, "rejected")
    assert "unpaid invoice" in view["reason"] and WEBMASTER in view["reason"]


async def test_new_billing_contact_without_valid_payment_method_rejects(world: System) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"billing": WEBMASTER})
    view = await world.wait_state(OWNER, request_id, "rejected")
    assert "no valid payment method" in view["reason"]
    await world.wait_mails(email_of(OWNER), "refused")


async def _with_unpaid_invoice(system: System, nic: str) -> None:
    await system.publish(
        InvoiceIssued(invoice_id=f"INV-{nic}", nic=nic, amount="42.00", currency="EUR", due_at="2026-01-31T00:00:00Z")
    )
    await eventually(
        lambda: system.sql("billing_check", "SELECT 1 FROM invoices WHERE invoice_id = $1", f"INV-{nic}"),
        what="the invoice to reach the billing check",
    )


class _Listener:
    """A queue of our own bound to the exchange: what another system listening would get."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection, queue: aio_pika.abc.AbstractQueue) -> None:
        self.connection, self.queue = connection, queue

    async def get_nowait_or_none(self) -> dict | None:
        message = await self.queue.get(no_ack=True, fail=False)
        return json.loads(message.body) if message else None

    async def close(self) -> None:
        await self.queue.delete(if_unused=False, if_empty=False)
        await self.connection.close()


async def _listen(system: System, routing_key: str) -> _Listener:
    connection = await aio_pika.connect(system.amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    exchange = await channel.declare_exchange(f"{system.namespace}contacts", aio_pika.ExchangeType.TOPIC, durable=True)
    await queue.bind(exchange, routing_key)
    return _Listener(connection, queue)

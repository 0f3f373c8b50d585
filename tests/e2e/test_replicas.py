"""The replicas other systems feed (accounts, services, invoices, payment methods) through
RabbitMQ and the real services: messages delivered in the reverse of the order they occurred
in never take a replica back in time, and what `account.deleted`, `service.deleted` and a
second `service.upserted` do to open requests and to "my contacts".

Each queue is consumed in order, so a marker published last on it, once seen, says the
messages before it were handled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from contacts_shared.contracts import (
    AccountDeleted,
    AccountUpserted,
    Contract,
    InvoiceIssued,
    InvoicePaid,
    PaymentMethodRemoved,
    PaymentMethodUpserted,
    ServiceDeleted,
    ServiceUpserted,
    Zone,
    envelope_for,
)
from seed import (
    ACCOUNTANT,
    BILLER,
    HOSTING,
    OLD_TECH,
    OWNER,
    STRANGER,
    WEBMASTER,
    email_of,
)
from support import System, eventually

pytestmark = pytest.mark.e2e

MARKER = "hh88888-ovh"  # an account nobody else uses: the requests queue's marker


async def publish_at(system: System, *messages: tuple[Contract, datetime]) -> None:
    """Publish each message, in this order, with an envelope saying it occurred at the time given
    (as another system republishing or delivering late would), each confirmed before the next."""
    connection = await aio_pika.connect(system.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{system.namespace}contacts")
        for message, at in messages:
            envelope = envelope_for(message).model_copy(update={"occurred_at": at})
            await exchange.publish(
                aio_pika.Message(
                    envelope.model_dump_json().encode(),
                    message_id=str(envelope.message_id),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=envelope.type,
            )


async def accounts(system: System, *nics: str) -> dict[str, str]:
    rows = await system.sql("requests", "SELECT nic, email FROM accounts WHERE nic = ANY($1::text[])", list(nics))
    return {r["nic"]: r["email"] for r in rows}


async def my_contacts(system: System, nic: str) -> list[dict]:
    async with system.api(nic) as client:
        response = await client.get("/v1/me/contacts")
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def requests_marker_seen(system: System, at: datetime) -> None:
    await publish_at(system, (AccountUpserted(nic=MARKER, email="marker@example.test", zone=Zone.EU), at))
    await eventually(lambda: accounts(system, MARKER), what="the marker on the requests queue")


# --- messages delivered backwards ---------------------------------------------------------------------


async def test_account_and_service_messages_delivered_backwards_never_go_back_in_time(world: System) -> None:
    base = datetime.now(UTC)  # after the seed's messages
    t1, t2, t3 = (base + timedelta(seconds=s) for s in (1, 2, 3))
    await publish_at(
        world,
        # The newer address first, then the older one.
        (AccountUpserted(nic=WEBMASTER, email="newer@example.test", zone=Zone.EU), t2),
        (AccountUpserted(nic=WEBMASTER, email="older@example.test", zone=Zone.EU), t1),
        # Deleted, then an older upsert.
        (AccountDeleted(nic=STRANGER), t2),
        (AccountUpserted(nic=STRANGER, email="late@example.test", zone=Zone.EU), t1),
        # The service deleted, then an older upsert.
        (ServiceDeleted(service=HOSTING), t2),
        (ServiceUpserted(service=HOSTING, type="hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER), t1),
    )
    await requests_marker_seen(world, t3)

    assert await accounts(world, WEBMASTER, STRANGER) == {WEBMASTER: "newer@example.test"}
    assert await world.contacts_of(OWNER, HOSTING) is None
    response = await world.submit(OWNER, HOSTING, {"tech": WEBMASTER})
    assert response.status_code == 404, response.text

    # Newer upserts are legitimate re-creations: the account and the service come back, the
    # service with the contacts of its new creation.
    await publish_at(
        world,
        (AccountUpserted(nic=STRANGER, email="back@example.test", zone=Zone.EU), t3),
        (ServiceUpserted(service=HOSTING, type="hosting", admin=OWNER, tech=WEBMASTER, billing=BILLER), t3),
    )

    async def recreated() -> dict[str, str] | None:
        return await world.contacts_of(OWNER, HOSTING)

    assert await eventually(recreated, what="the service created again") == {"admin": OWNER, "tech": WEBMASTER, "billing": BILLER}
    assert await accounts(world, STRANGER) == {STRANGER: "back@example.test"}


async def test_invoice_and_payment_method_messages_delivered_backwards_never_go_back_in_time(world: System) -> None:
    base = datetime.now(UTC)
    t1, t2, t3 = (base + timedelta(seconds=s) for s in (1, 2, 3))
    await publish_at(
        world,
        # Paid, then its older issue: stays paid.
        (InvoicePaid(invoice_id="INV-r"), t2),
        (InvoiceIssued(invoice_id="INV-r", nic=WEBMASTER, amount="9.99", currency="EUR", due_at=base), t1),
        # Removed, then its older upsert: stays removed.
        (PaymentMethodRemoved(payment_method_id="pm-r"), t2),
        (PaymentMethodUpserted(payment_method_id="pm-r", nic=WEBMASTER, kind="card"), t1),
        # The billing check's marker, last on its queue.
        (PaymentMethodUpserted(payment_method_id="pm-marker", nic=STRANGER, kind="card"), t3),
    )
    await eventually(
        lambda: world.sql("billing_check", "SELECT 1 FROM payment_methods WHERE payment_method_id = 'pm-marker'"),
        what="the marker on the billing check's queue",
    )

    # The webmaster owes nothing and has no payment method: refused for that reason alone.
    request_id = await world.submit_one(OWNER, HOSTING, {"billing": WEBMASTER})
    view = await world.wait_state(OWNER, request_id, "rejected")
    assert view["reason"] == f"the new billing contact {WEBMASTER} has no valid payment method"

    # A newer upsert brings the payment method back.
    await publish_at(world, (PaymentMethodUpserted(payment_method_id="pm-r", nic=WEBMASTER, kind="card"), t3))

    async def revived() -> bool:
        rows = await world.sql("billing_check", "SELECT removed FROM payment_methods WHERE payment_method_id = 'pm-r'")
        return rows[0]["removed"] is False

    await eventually(revived, what="the payment method back")
    request_id = await world.submit_one(OWNER, HOSTING, {"billing": WEBMASTER})
    await world.wait_state(OWNER, request_id, "validating")


# --- what deletes and a second upsert do ----------------------------------------------------------------


async def test_a_deleted_service_leaves_my_contacts_and_its_open_request_fails_when_applied(world: System) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    webmaster = await world.token_mail(email_of(WEBMASTER), request_id)
    owner = await world.token_mail(email_of(OWNER), request_id)

    await world.publish(ServiceDeleted(service=HOSTING))

    async def gone() -> bool:
        return await world.contacts_of(OWNER, HOSTING) is None

    await eventually(gone, what="the service gone from the owner's contacts")
    assert await my_contacts(world, OLD_TECH) == []
    assert (await world.submit(OWNER, HOSTING, {"billing": ACCOUNTANT})).status_code == 404
    # The open request is not ended by the delete: it stays open, its confirmers may still
    # answer, and it fails when it comes to be applied.
    assert (await world.request(OWNER, request_id))["state"] == "validating"
    assert (await world.act(WEBMASTER, request_id, "accept", webmaster.token)).status_code == 200
    assert (await world.act(OWNER, request_id, "accept", owner.token)).status_code == 200
    view = await world.wait_state(OWNER, request_id, "failed")
    assert view["reason"] == "the service no longer exists"
    await world.wait_mails(email_of(OWNER), "failed")
    await world.wait_mails(email_of(WEBMASTER), "failed")


async def test_a_deleted_account_still_sees_its_services_and_can_become_a_contact_by_an_open_request(world: System) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    webmaster = await world.token_mail(email_of(WEBMASTER), request_id)
    owner = await world.token_mail(email_of(OWNER), request_id)
    assert (await world.act(WEBMASTER, request_id, "accept", webmaster.token)).status_code == 200

    await world.publish(AccountDeleted(nic=WEBMASTER), AccountDeleted(nic=BILLER))

    async def deleted() -> bool:
        return await accounts(world, WEBMASTER, BILLER) == {}

    await eventually(deleted, what="the accounts deleted")
    # Nobody's contacts change: the service still names the deleted billing contact, who still
    # sees it (signed in with a valid token), but may no longer ask for anything...
    assert await world.contacts_of(OWNER, HOSTING) == {"admin": OWNER, "tech": OLD_TECH, "billing": BILLER}
    assert await world.contacts_of(BILLER, HOSTING) == {"admin": OWNER, "tech": OLD_TECH, "billing": BILLER}
    refused = await world.submit(BILLER, HOSTING, {"billing": ACCOUNTANT})
    assert refused.status_code == 422 and refused.json()["title"] == "Unknown account"
    # ... nor be named in a new request.
    refused = await world.submit(OWNER, HOSTING, {"billing": WEBMASTER})
    assert refused.status_code == 422 and refused.json()["title"] == "Unknown NIC handle"

    # The open request that names the deleted account goes on: once the owner accepts, the
    # deleted account becomes the technical contact, and is not told (its address is gone).
    assert (await world.act(OWNER, request_id, "accept", owner.token)).status_code == 200
    await world.wait_state(OWNER, request_id, "done")
    assert await world.contacts_of(OWNER, HOSTING) == {"admin": OWNER, "tech": WEBMASTER, "billing": BILLER}
    await world.wait_mails(email_of(OLD_TECH), "done")
    outcome = await world.sql("notifier", "SELECT nic, subject FROM mails WHERE request_id = $1 AND kind = 'outcome'", request_id)
    assert sorted((r["nic"], r["subject"].split(":")[0]) for r in outcome) == sorted(
        [(OWNER, f"Contact change done for {HOSTING}"), (OLD_TECH, f"Contact change done for {HOSTING}"), (OLD_TECH, "Heads-up")]
    )


async def test_a_second_service_upserted_changes_the_type_not_the_contacts(world: System) -> None:
    await world.publish(ServiceUpserted(service=HOSTING, type="hosting-pro", admin=STRANGER, tech=STRANGER, billing=STRANGER))

    async def retyped() -> list[dict] | None:
        items = await my_contacts(world, OWNER)
        return items if items and items[0]["type"] == "hosting-pro" else None

    (item,) = await eventually(retyped, what="the new type")
    assert item["contacts"] == {"admin": OWNER, "tech": OLD_TECH, "billing": BILLER}
    assert await my_contacts(world, STRANGER) == []

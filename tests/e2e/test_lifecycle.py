"""Spec section 3: decline, cancel, and the re-check just before applying."""

from __future__ import annotations

import pytest
from contacts_shared.contracts import InvoiceIssued
from seed import BILLER, HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of
from support import System, eventually

pytestmark = pytest.mark.e2e


async def test_a_done_request_tells_its_whole_history_in_order(world: System) -> None:
    # The last answer, its move to applying and the request's move to done are each saved in
    # one statement (several history lines at once): their order must still be the order of
    # what happened.
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    for nic in (WEBMASTER, OWNER):
        mail = await world.token_mail(email_of(nic), request_id)
        assert (await world.act(nic, request_id, "accept", mail.token)).status_code == 200
    view = await world.wait_state(OWNER, request_id, "done")
    assert [(h["state"], h["actor"], h["reason"]) for h in view["history"]] == [
        ("checking", OWNER, "submitted"),
        ("validating", "billing-check", None),
        ("validating", WEBMASTER, f"accepted by {WEBMASTER}"),
        ("validating", OWNER, f"accepted by {OWNER}"),
        ("applying", OWNER, "all confirmers accepted"),
        ("done", "system", None),
    ]
    assert (await world.contacts_of(OWNER, HOSTING))["tech"] == WEBMASTER


async def test_decline_ends_the_request_and_tells_the_others(world: System) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    mail = await world.token_mail(email_of(WEBMASTER), request_id)
    response = await world.act(WEBMASTER, request_id, "decline", mail.token)
    assert response.status_code == 200, response.text
    view = await world.wait_state(OWNER, request_id, "declined")
    assert {c["nic"]: c["state"] for c in view["confirmers"]}[WEBMASTER] == "declined"
    await world.wait_mails(email_of(OWNER), "declined")
    await world.wait_mails(email_of(WEBMASTER), "declined")
    assert (await world.contacts_of(OWNER, HOSTING))["tech"] == OLD_TECH


async def test_only_the_requester_cancels_and_only_while_open(world: System) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    mail = await world.token_mail(email_of(WEBMASTER), request_id)
    assert (await world.act(WEBMASTER, request_id, "cancel")).status_code == 403
    response = await world.act(OWNER, request_id, "cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    await world.wait_mails(email_of(WEBMASTER), "cancelled")
    # A token of a cancelled request does nothing; a second cancel is a conflict.
    assert (await world.act(WEBMASTER, request_id, "accept", mail.token)).status_code == 409
    assert (await world.act(OWNER, request_id, "cancel")).status_code == 409
    # A new request for the same type may now be opened.
    await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})


async def test_invoice_issued_while_waiting_fails_the_apply_and_keeps_contacts(world: System) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    webmaster = await world.token_mail(email_of(WEBMASTER), request_id)
    owner = await world.token_mail(email_of(OWNER), request_id)
    assert (await world.act(WEBMASTER, request_id, "accept", webmaster.token)).status_code == 200

    await world.publish(
        InvoiceIssued(invoice_id="INV-late", nic=WEBMASTER, amount="9.99", currency="EUR", due_at="2026-12-01T00:00:00Z")
    )
    await eventually(
        lambda: world.sql("billing_check", "SELECT 1 FROM invoices WHERE invoice_id = 'INV-late'"),
        what="the invoice to reach the billing check",
    )
    assert (await world.act(OWNER, request_id, "accept", owner.token)).status_code == 200

    view = await world.wait_state(OWNER, request_id, "failed")
    assert "unpaid invoice" in view["reason"]
    assert await world.contacts_of(OWNER, HOSTING) == {"admin": OWNER, "tech": OLD_TECH, "billing": BILLER}
    await world.wait_mails(email_of(OWNER), "failed")
    await world.wait_mails(email_of(WEBMASTER), "failed")
    assert world.mails(subject="done") == []

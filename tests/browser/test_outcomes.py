"""What else can happen to a request, seen in the browser: declined, codes sent again to a
changed address, cancelled, refused for an unpaid invoice; and mistakes caught by the form."""

from __future__ import annotations

import pytest
from browser.helpers import Person, go_to, link_in, request_id_of, screenshot
from contacts_shared.contracts import AccountUpserted, InvoiceIssued, Zone
from playwright.async_api import Page, expect
from seed import ACCOUNTANT, CANADIAN, HOSTING, OWNER, STRANGER, WEBMASTER, email_of
from support import System, eventually

pytestmark = pytest.mark.e2e


async def ask(owner: Page, field: str, nic: str) -> None:
    await go_to(owner, "My contacts")
    await owner.get_by_role("link", name=f"Modify contacts of {HOSTING}").click()
    await owner.get_by_label(field).fill(nic)
    await owner.get_by_role("button", name="Confirm").click()


async def test_decline(world: System, person: Person) -> None:
    owner = await person(OWNER)
    await ask(owner, "Technical contact", WEBMASTER)
    await expect(owner.locator(".notice")).to_contain_text("Your request was sent")
    request_id = request_id_of(owner)
    mail = await world.token_mail(email_of(WEBMASTER), request_id)

    webmaster = await person(WEBMASTER)
    await webmaster.goto(link_in(mail))
    await webmaster.get_by_role("button", name="Decline").click()
    await expect(webmaster.get_by_test_id("state")).to_have_text("Declined")
    await expect(webmaster.get_by_test_id("progress")).to_contain_text(f"declined by {WEBMASTER}")
    await screenshot(webmaster, world, "declined")
    await world.wait_mails(email_of(OWNER), "declined")

    # The owner sees it among the declined requests, without any action left.
    await owner.goto("/requests?state=declined")
    card = owner.locator(f'li[data-request="{request_id}"]')
    await expect(card.get_by_test_id("state")).to_have_text("Declined")
    await expect(card.get_by_role("button")).to_have_count(0)
    await owner.goto("/requests?state=validating")
    await expect(owner.locator("li[data-request]")).to_have_count(0)


async def test_resend_to_a_changed_address_then_cancel(world: System, person: Person) -> None:
    owner = await person(OWNER)
    await ask(owner, "Billing contact", ACCOUNTANT)
    request_id = request_id_of(owner)
    first = await world.token_mail(email_of(ACCOUNTANT), request_id)

    # The accountant never saw it: their account's address had changed meanwhile.
    new_address = "accounts-payable@example.test"
    await world.publish(AccountUpserted(nic=ACCOUNTANT, email=new_address, zone=Zone.EU))
    await eventually(
        lambda: world.sql("requests", "SELECT 1 FROM accounts WHERE nic = $1 AND email = $2", ACCOUNTANT, new_address),
        what="the new address to reach the requests service",
    )
    await go_to(owner, "My requests")
    card = owner.locator(f'li[data-request="{request_id}"]')
    await card.get_by_role("button", name="Resend request").click()
    await expect(owner.locator(".notice")).to_contain_text("New validation codes were sent")
    await screenshot(owner, world, "resent")
    second = await world.token_mail(new_address, request_id)
    assert second.token != first.token

    # The old code no longer works; the error sits next to the code field.
    accountant = await person(ACCOUNTANT)
    await accountant.goto(link_in(first))
    await accountant.get_by_role("button", name="Accept").click()
    token_field = accountant.get_by_label("Your validation code")
    await expect(token_field).to_have_attribute("aria-invalid", "true")
    await expect(accountant.locator(".field .error")).to_contain_text("not valid")
    await screenshot(accountant, world, "old-code-refused")

    # The owner cancels; the accountant is told at the new address.
    await go_to(owner, "My requests")
    await owner.locator(f'li[data-request="{request_id}"]').get_by_role("button", name="Cancel request").click()
    await expect(owner.get_by_test_id("state")).to_have_text("Cancelled")
    await expect(owner.locator(".notice")).to_contain_text("You cancelled this request")
    await screenshot(owner, world, "cancelled")
    await world.wait_mails(new_address, "cancelled")

    # The accountant's page now offers nothing to do with the code of the link.
    await accountant.goto(link_in(second))
    await expect(accountant.get_by_test_id("state")).to_have_text("Cancelled")
    await expect(accountant.get_by_label("Your validation code")).to_have_count(0)


async def test_refused_for_an_unpaid_invoice_and_form_mistakes(world: System, person: Person) -> None:
    await world.publish(
        InvoiceIssued(invoice_id="INV-2026-117", nic=STRANGER, amount="42.00", currency="EUR", due_at="2026-01-31T00:00:00Z")
    )
    await eventually(
        lambda: world.sql("billing_check", "SELECT 1 FROM invoices WHERE invoice_id = 'INV-2026-117'"),
        what="the invoice to reach the billing check",
    )
    owner = await person(OWNER)

    # Mistakes are explained next to the field, and nothing is sent.
    await ask(owner, "Technical contact", "not a handle")
    tech = owner.get_by_label("Technical contact")
    await expect(tech).to_have_attribute("aria-invalid", "true")
    await expect(owner.locator("#tech-error")).to_contain_text("is not a NIC handle")
    await tech.fill(CANADIAN)
    await owner.get_by_role("button", name="Confirm").click()
    await expect(owner.locator("#tech-error")).to_contain_text("another geographical zone")
    await tech.fill("zz99999-ovh")
    await owner.get_by_role("button", name="Confirm").click()
    await expect(owner.locator("#tech-error")).to_contain_text("not a known customer account")
    await screenshot(owner, world, "form-errors")
    await owner.get_by_role("button", name="Confirm").click()  # unchanged field: still refused
    assert await world.sql("requests", "SELECT 1 FROM contact_changes") == []

    # The billing check refuses a new contact who owes an invoice; the page says why.
    await tech.fill(STRANGER)
    await owner.get_by_role("button", name="Confirm").click()
    await expect(owner.get_by_test_id("state")).to_have_text("Refused")
    await expect(owner.get_by_test_id("reason")).to_contain_text(f"{STRANGER} has an unpaid invoice")
    # Another customer's invoice is named to nobody: the billing check's log keeps it for support.
    await expect(owner.get_by_test_id("reason")).not_to_contain_text("INV-2026-117")
    await screenshot(owner, world, "refused-unpaid-invoice")
    await world.wait_mails(email_of(OWNER), "refused")

"""The support desk in the browser: an agent (the development sign-in's agent box) looks a service
or an account up, opens a request, unlocks a confirmer's locked code and cancels a request for a
reason; a customer finds no trace of the desk."""

from __future__ import annotations

import pytest
from browser.helpers import (
    Person,
    assert_accessible_basics,
    link_in,
    screenshot,
    sign_in,
)
from playwright.async_api import Page, expect
from seed import HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of
from support import System, eventually

pytestmark = pytest.mark.e2e

AGENT = "sp12345-ovh"  # has no account: agents are staff, known by the identity provider only


async def agent_signs_in(person: Person) -> Page:
    """A new browser signed in as the agent, on the support desk's lookup page."""
    agent = await person()
    await agent.goto("/signin")
    await agent.get_by_label("Sign in as a support agent").check()
    await sign_in(agent, AGENT)
    await agent.get_by_role("navigation", name="Main").get_by_role("link", name="Support").click()
    await expect(agent.get_by_role("heading", level=1)).to_have_text("Support desk")
    return agent


async def codes_announced(world: System, request_id: str) -> None:
    """Until both confirmers' codes are mailed and announced (where they went, masked)."""

    async def both() -> bool:
        rows = await world.sql("requests", "SELECT nic FROM confirmers WHERE request_id = $1::uuid AND sent_to IS NOT NULL", request_id)
        return len(rows) == 2

    await eventually(both, what="both codes to be announced")


async def test_an_agent_unlocks_a_code_locked_by_wrong_tries(world: System, person: Person) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    mail = await world.token_mail(email_of(WEBMASTER), request_id)
    await codes_announced(world, request_id)
    for _ in range(5):  # the webmaster mistypes the code again and again: it locks
        assert (await world.act(WEBMASTER, request_id, "accept", "wrong")).status_code == 422

    # The agent looks the hosting plan up from the desk.
    agent = await agent_signs_in(person)
    await screenshot(agent, world, "support-lookup", docs=True)
    await assert_accessible_basics(agent)
    await agent.get_by_label("Service").fill(HOSTING)
    await agent.get_by_role("button", name="Look up service").click()
    await expect(agent.get_by_role("heading", level=1)).to_have_text(f"Service {HOSTING}")
    await expect(agent.get_by_test_id("service-type")).to_have_text("hosting")
    await expect(agent.locator('[data-contact="tech"]')).to_have_text(OLD_TECH)
    row = agent.locator(f'tr[data-request="{request_id}"]')
    await expect(row.get_by_test_id("state")).to_have_text("Waiting for confirmation")
    await expect(row.get_by_test_id("to")).to_have_text(WEBMASTER)
    await screenshot(agent, world, "support-service", docs=True)
    await assert_accessible_basics(agent)

    # The request: where each code went (masked), and whose code is locked.
    await row.get_by_role("link", name="Open").click()
    await expect(agent.get_by_role("heading", level=1)).to_have_text(f"Technical contact of {HOSTING}")
    codes = agent.get_by_test_id("codes")
    await expect(codes.get_by_test_id(f"code-{WEBMASTER}").get_by_test_id("sent-to")).to_have_text("b•••@example.test")
    await expect(codes.get_by_test_id(f"code-{OWNER}").get_by_test_id("sent-to")).to_have_text("a•••@example.test")
    await expect(codes).not_to_contain_text(email_of(WEBMASTER))
    await expect(codes.get_by_test_id(f"code-{WEBMASTER}").get_by_test_id("locked")).to_have_text("locked")
    await expect(codes.get_by_test_id(f"code-{OWNER}").get_by_test_id("locked")).to_have_count(0)
    await expect(agent.get_by_role("button", name=f"Unlock the code of {OWNER}")).to_have_count(0)
    await expect(agent.get_by_role("button", name="Resend codes")).to_be_visible()
    await expect(agent.get_by_role("button", name="Cancel request")).to_be_visible()
    await screenshot(agent, world, "support-request", docs=True)
    await assert_accessible_basics(agent)

    await agent.get_by_label("Reason for unlocking").fill("Ticket 4411: the webmaster mistyped the code")
    await agent.get_by_role("button", name=f"Unlock the code of {WEBMASTER}").click()
    await expect(agent.locator(".notice")).to_have_text("The validation code was unlocked: its holder can use it again.")
    await expect(codes.get_by_test_id("locked")).to_have_count(0)
    await expect(agent.locator(".history")).to_contain_text(f"support:{AGENT}")
    await expect(agent.locator(".history")).to_contain_text("Ticket 4411: the webmaster mistyped the code")

    # The same code from the email works again.
    webmaster = await person(WEBMASTER)
    await webmaster.goto(link_in(mail))
    await webmaster.get_by_role("button", name="Accept").click()
    await expect(webmaster.locator(".notice")).to_have_text("You accepted this request.")
    await expect(webmaster.get_by_test_id("progress")).to_have_text(f"accepted by {WEBMASTER}, waiting for {OWNER}")
    await agent.reload()
    await expect(codes.get_by_test_id(f"code-{WEBMASTER}")).to_contain_text("accepted")


async def test_an_agent_cancels_a_request_for_a_reason(world: System, person: Person) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    await world.wait_state(OWNER, request_id, "validating")

    # Found from the requester's account this time.
    agent = await agent_signs_in(person)
    await agent.get_by_label("Account").fill(OWNER.upper())
    await agent.get_by_role("button", name="Look up account").click()
    await expect(agent.get_by_role("heading", level=1)).to_have_text(f"Account {OWNER}")
    await expect(agent.get_by_test_id("email")).to_have_text(email_of(OWNER))
    await expect(agent.get_by_test_id("zone")).to_have_text("EU")
    await assert_accessible_basics(agent)
    await agent.locator(f'tr[data-request="{request_id}"]').get_by_role("link", name="Open").click()

    # A reason is needed; the error sits next to the field.
    await agent.get_by_role("button", name="Cancel request").click()
    reason = agent.get_by_label("Reason for cancelling")
    await expect(reason).to_have_attribute("aria-invalid", "true")
    await expect(agent.locator("#cancel-reason-error")).to_have_text("Say why: the reason is written in the request's history.")
    assert (await world.request(OWNER, request_id))["state"] == "validating"

    why = "The customer asked by phone, ticket 5120"
    await reason.fill(why)
    await agent.get_by_role("button", name="Cancel request").click()
    await expect(agent.locator(".notice")).to_contain_text("The request was cancelled")
    await expect(agent.get_by_test_id("state")).to_have_text("Cancelled")
    last = agent.locator(".history tbody tr").last
    await expect(last).to_contain_text(f"support:{AGENT}")
    await expect(last).to_contain_text(f"cancelled by support: {why}")
    await expect(agent.get_by_test_id("no-actions")).to_be_visible()
    await screenshot(agent, world, "support-cancelled")

    # The parties hear it, with the reason; the requester's page shows it too.
    for nic in (OWNER, WEBMASTER):
        (told,) = await world.wait_mails(email_of(nic), "cancelled")
        assert why in told.body
    history = (await world.request(OWNER, request_id))["history"]
    assert history[-1]["actor"] == f"support:{AGENT}" and history[-1]["state"] == "cancelled"


async def test_a_customer_finds_no_support_desk(world: System, person: Person) -> None:
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    customer = await person(OWNER)
    await expect(customer.get_by_role("navigation", name="Main").get_by_role("link", name="My requests")).to_be_visible()
    await expect(customer.get_by_role("navigation", name="Main").get_by_role("link", name="Support")).to_have_count(0)

    for path in ("/support", f"/support/services/{HOSTING}", f"/support/accounts/{OWNER}", f"/support/requests/{request_id}"):
        response = await customer.goto(path)
        assert response is not None and response.status == 404, path
        await expect(customer.get_by_role("heading", level=1)).to_have_text("Not found")
        await expect(customer.get_by_role("navigation", name="Main").get_by_role("link", name="Support")).to_have_count(0)
    await assert_accessible_basics(customer)

    # Even a post carrying the customer's own valid CSRF token is answered "not found".
    csrf = await customer.locator('input[name="csrf"]').first.get_attribute("value")
    posted = await customer.context.request.post(
        f"/support/requests/{request_id}", form={"csrf": csrf or "", "action": "cancel", "reason": "mine"}, max_redirects=0
    )
    assert posted.status == 404
    assert "<h1>Not found</h1>" in await posted.text()
    assert (await world.request(OWNER, request_id))["state"] in ("checking", "validating")

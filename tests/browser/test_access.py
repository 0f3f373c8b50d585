"""Who may do what on the pages, and the protections around them: a technical contact's form,
a phone-sized screen, forged cross-site posts, strangers, and links that must not act by
themselves."""

from __future__ import annotations

import re

import pytest
from browser.helpers import (
    Person,
    assert_accessible_basics,
    link_in,
    request_id_of,
    screenshot,
    sign_in,
)
from playwright.async_api import expect
from seed import BILLER, HOSTING, OLD_TECH, OWNER, STRANGER, WEBMASTER, email_of
from support import System

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}


async def test_technical_contact_may_only_replace_himself(world: System, person: Person) -> None:
    tech = await person(OLD_TECH, viewport=PHONE)
    row = tech.locator(f'tr[data-service="{HOSTING}"]')
    await expect(row).to_contain_text("technical")
    await screenshot(tech, world, "my-contacts-phone")
    # Readable on a phone: nothing wider than the screen.
    assert await tech.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    await row.get_by_role("link", name=f"Modify contacts of {HOSTING}").click()
    admin, billing, mine = (tech.get_by_label(f"{t} contact") for t in ("Administrative", "Billing", "Technical"))
    await expect(admin).to_be_disabled()
    await expect(billing).to_be_disabled()
    await expect(mine).to_be_editable()
    await expect(admin).to_have_value(OWNER)
    await expect(billing).to_have_value(BILLER)
    await expect(tech.locator("#admin-hint")).to_contain_text("Not editable: as technical contact you may only replace yourself")
    await expect(tech.locator("#billing-hint")).to_contain_text("can be changed by the administrative contact")
    assert await tech.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await screenshot(tech, world, "modify-form-technical-phone")
    await assert_accessible_basics(tech)

    # Replacing himself is allowed; the keyboard alone does it.
    await mine.fill(WEBMASTER)
    await mine.press("Enter")
    await expect(tech.get_by_test_id("to")).to_have_text(WEBMASTER)
    await world.token_mail(email_of(OLD_TECH), request_id_of(tech))


async def test_forged_posts_strangers_and_links_that_do_nothing_by_themselves(world: System, person: Person) -> None:
    owner = await person(OWNER)
    await owner.goto(f"/contacts/modify?service={HOSTING}")
    await owner.get_by_label("Technical contact").fill(WEBMASTER)
    await owner.get_by_role("button", name="Confirm").click()
    request_id = request_id_of(owner)
    mail = await world.token_mail(email_of(WEBMASTER), request_id)

    # A form post without the CSRF token, or from another site, changes nothing.
    csrf = await owner.locator('input[name="csrf"]').first.get_attribute("value")
    api = owner.context.request
    form = {"service": HOSTING, "billing": WEBMASTER, "csrf": csrf}
    missing = await api.post("/contacts/modify", form={k: v for k, v in form.items() if k != "csrf"}, max_redirects=0)
    assert missing.status == 403
    assert "nothing was changed" in await missing.text()
    foreign = await api.post(
        "/contacts/modify", form=form, headers={"Origin": "https://attacker.example"}, max_redirects=0
    )
    assert foreign.status == 403
    wrong = await api.post(f"/requests/{request_id}", form={"action": "cancel", "csrf": "0" * 64}, max_redirects=0)
    assert wrong.status == 403
    # The same cookie and token from our own page do work (the checks are not just closed doors).
    allowed = await api.post("/contacts/modify", form=form, headers={"Origin": world.api_url}, max_redirects=0)
    assert allowed.status == 303
    views = await world.sql("requests", "SELECT type, state FROM contact_changes ORDER BY created_at")
    assert [r["type"] for r in views] == ["tech", "billing"]

    # Someone else opening the link (signed in as themselves) sees nothing of it.
    stranger = await person(STRANGER)
    response = await stranger.goto(link_in(mail))
    assert response is not None and response.status == 404
    await expect(stranger.get_by_role("heading", level=1)).to_have_text("Not found")
    await expect(stranger.get_by_label("Your validation code")).to_have_count(0)
    response = await stranger.goto(f"/contacts/modify?service={HOSTING}")
    assert response is not None and response.status == 404
    await screenshot(stranger, world, "not-found")
    await assert_accessible_basics(stranger)

    # Opening the link, even again and again, changes nothing; the code still works afterwards.
    webmaster = await person(WEBMASTER)
    for _ in range(3):
        await webmaster.goto(link_in(mail))
    assert {c["state"] for c in (await world.request(OWNER, request_id))["confirmers"]} == {"pending"}
    await webmaster.get_by_role("button", name="Accept").click()
    await expect(webmaster.get_by_test_id("progress")).to_have_text(f"accepted by {WEBMASTER}, waiting for {OWNER}")

    # Sign-in only sends people to pages of this site, and the session cookie is HttpOnly.
    anonymous = await person()
    await anonymous.goto("/signin?next=//attacker.example/")
    await sign_in(anonymous, OLD_TECH)
    assert re.search(r"/contacts$", anonymous.url)
    cookies = {c["name"]: c for c in await anonymous.context.cookies()}
    assert cookies["contacts_session"]["httpOnly"] and cookies["contacts_session"]["sameSite"] == "Lax"
    await anonymous.get_by_role("button", name="Sign out").click()
    await expect(anonymous.get_by_role("heading", level=1)).to_have_text("Sign in")
    await anonymous.goto("/requests")
    await expect(anonymous.get_by_role("heading", level=1)).to_have_text("Sign in")

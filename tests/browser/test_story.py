"""The guide's webmaster example, done entirely with a browser and a mailbox."""

from __future__ import annotations

import re

import pytest
from browser.helpers import (
    Person,
    assert_accessible_basics,
    go_to,
    link_in,
    request_id_of,
    screenshot,
    sign_in,
)
from playwright.async_api import expect
from seed import HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of
from support import System

pytestmark = pytest.mark.e2e


async def test_owner_names_the_webmaster_technical_contact(world: System, person: Person) -> None:
    # The owner sees the hosting plan on My contacts and opens its Modify contacts form.
    owner = await person(OWNER)
    row = owner.locator(f'tr[data-service="{HOSTING}"]')
    await expect(row.locator('[data-contact="tech"]')).to_have_text(OLD_TECH)
    await expect(row).to_contain_text("administrative")
    await screenshot(owner, world, "my-contacts", docs=True)
    await assert_accessible_basics(owner)

    await owner.get_by_role("link", name=f"Modify contacts of {HOSTING}").click()
    await expect(owner.get_by_role("heading", level=1)).to_have_text("Modify contacts")
    await owner.get_by_label("Technical contact").fill(WEBMASTER.upper())  # handles are case-insensitive
    await screenshot(owner, world, "modify-form", docs=True)
    await assert_accessible_basics(owner)
    await owner.get_by_role("button", name="Confirm").click()
    await expect(owner.locator(".notice")).to_contain_text("Your request was sent")
    request_id = request_id_of(owner)

    # Both confirmers receive their own code.
    webmaster_mail = await world.token_mail(email_of(WEBMASTER), request_id)
    owner_mail = await world.token_mail(email_of(OWNER), request_id)
    assert webmaster_mail.token != owner_mail.token

    # The webmaster follows the link, signs in on the way, and finds the code filled in.
    webmaster = await person()
    await webmaster.goto(link_in(webmaster_mail))
    await expect(webmaster.get_by_role("heading", level=1)).to_have_text("Sign in")
    await screenshot(webmaster, world, "sign-in", docs=True)
    await assert_accessible_basics(webmaster)
    await sign_in(webmaster, WEBMASTER)
    token_field = webmaster.get_by_label("Your validation code")
    await expect(token_field).to_have_value(webmaster_mail.token)
    await screenshot(webmaster, world, "confirm", docs=True)
    await assert_accessible_basics(webmaster)
    # Opening the link changed nothing.
    assert (await world.request(OWNER, request_id))["state"] == "validating"
    assert {c["state"] for c in (await world.request(OWNER, request_id))["confirmers"]} == {"pending"}

    await webmaster.get_by_role("button", name="Accept").click()
    await expect(webmaster.locator(".notice")).to_have_text("You accepted this request.")
    await expect(webmaster.get_by_test_id("waiting")).to_contain_text(f"still waiting for confirmation from {OWNER}")
    await expect(webmaster.get_by_test_id("progress")).to_have_text(f"accepted by {WEBMASTER}, waiting for {OWNER}")
    # Where each code went, masked: the code was taken, so its announcement had come in.
    codes = webmaster.get_by_test_id("codes")
    await expect(codes.get_by_test_id(f"code-{WEBMASTER}").get_by_test_id("sent-to")).to_have_text("b•••@example.test")
    await expect(codes).not_to_contain_text(email_of(WEBMASTER))
    await screenshot(webmaster, world, "confirm-accepted", docs=True)

    # The owner accepts from My requests, typing the code from their email.
    await go_to(owner, "My requests")
    card = owner.locator(f'li[data-request="{request_id}"]')
    await expect(card.get_by_test_id("progress")).to_have_text(f"accepted by {WEBMASTER}, waiting for {OWNER}")
    await expect(card.get_by_test_id("from")).to_have_text(OLD_TECH)
    await expect(card.get_by_test_id("to")).to_have_text(WEBMASTER)
    await screenshot(owner, world, "my-requests", docs=True)
    await assert_accessible_basics(owner)
    await card.get_by_label("Your validation code").fill(owner_mail.token)
    await card.get_by_role("button", name="Accept").click()
    # "applying" lasts milliseconds; the page follows the request until it is done.
    await expect(owner.get_by_test_id("state")).to_have_text("Done")
    await expect(owner.get_by_test_id("progress")).to_have_text(re.compile(f"accepted by {OWNER}, {WEBMASTER}|accepted by {WEBMASTER}, {OWNER}"))
    await screenshot(owner, world, "request-done")

    await go_to(owner, "My contacts")
    await expect(owner.locator(f'tr[data-service="{HOSTING}"] [data-contact="tech"]')).to_have_text(WEBMASTER)
    await screenshot(owner, world, "my-contacts-after")

    # The previous technical contact is told; everybody involved hears it is done.
    for nic in (OLD_TECH, OWNER, WEBMASTER):
        await world.wait_mails(email_of(nic), "done")

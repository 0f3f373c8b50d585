"""Batches in the browser: the owner ticks 31 services on My contacts, opens one form for them
and names the new technical contact; the one this contact runs already is refused, the 30
others go; the webmaster and the owner each follow the one link of their one
email and accept all 30 at once; My requests shows the batch as one row that opens to its
requests."""

from __future__ import annotations

import re

import pytest
from browser.helpers import Person, assert_accessible_basics, go_to, screenshot
from contacts_shared.contracts import ServiceUpserted
from playwright.async_api import Page, expect
from seed import BILLER, OLD_TECH, OWNER, WEBMASTER, email_of
from support import Mail, System, eventually

pytestmark = pytest.mark.e2e

SHOPS = [f"shop-{n:02d}.example" for n in range(30)]
MANAGED = "run-by-the-webmaster.example"  # the webmaster is its technical contact already
BATCH_LINK = re.compile(r"https?://\S+/batches/[0-9a-f-]{36}\?token=\S+")


async def batch_mail(world: System, nic: str) -> Mail:
    async def arrived() -> list[Mail] | None:
        return [m for m in world.mails(email_of(nic), "please confirm") if BATCH_LINK.search(m.body)] or None

    (mail,) = await eventually(arrived, what=f"the batch's email to {nic}")
    return mail


async def accept_all(page: Page, mail: Mail) -> None:
    match = BATCH_LINK.search(mail.body)
    assert match
    await page.goto(match.group(0))
    await expect(page.get_by_label("Your validation code")).not_to_have_value("")
    await page.get_by_role("button", name="Accept all").click()
    await expect(page.get_by_role("status")).to_contain_text("You accepted the requests of this batch")


async def test_several_services_are_changed_in_one_form_and_confirmed_with_one_code_each(world: System, person: Person) -> None:
    await world.publish(
        *(ServiceUpserted(service=s, type="hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER) for s in SHOPS),
        ServiceUpserted(service=MANAGED, type="hosting", admin=OWNER, tech=WEBMASTER, billing=BILLER),
    )
    await eventually(lambda: world.contacts_of(OWNER, MANAGED), what="the shops to be known")

    owner = await person(OWNER)
    for shop in [*SHOPS, MANAGED]:
        await owner.get_by_role("checkbox", name=f"Select {shop}").check()
    await owner.get_by_role("button", name="Modify the selected services together").click()
    await expect(owner.get_by_role("heading", level=1)).to_have_text("Modify contacts of several services")
    await expect(owner.get_by_test_id("chosen").get_by_role("listitem")).to_have_count(31)
    await owner.get_by_label("New technical contact").fill(WEBMASTER)
    await assert_accessible_basics(owner)
    await screenshot(owner, world, "batch-form", docs=True)
    await owner.get_by_role("button", name="Confirm").click()
    await expect(owner.get_by_test_id("created")).to_contain_text("30 requests sent")
    refused = owner.get_by_test_id("refused")
    await expect(refused.get_by_role("listitem")).to_have_count(1)
    await expect(refused).to_contain_text(MANAGED)
    await expect(refused).to_contain_text("is already the technical contact")
    await screenshot(owner, world, "batch-submitted", docs=True)

    webmaster = await person(WEBMASTER)
    mail = await batch_mail(world, WEBMASTER)
    assert all(shop in mail.body for shop in SHOPS)
    match = BATCH_LINK.search(mail.body)
    assert match
    await webmaster.goto(match.group(0))
    await expect(webmaster.get_by_test_id("batch-items").locator("li.request")).to_have_count(30)
    await screenshot(webmaster, world, "batch-confirm", docs=True)
    await webmaster.get_by_role("button", name="Accept all").click()
    await expect(webmaster.get_by_role("status")).to_contain_text("You accepted the requests of this batch")

    await accept_all(owner, await batch_mail(world, OWNER))

    async def all_changed() -> bool:
        techs = [((await world.contacts_of(OWNER, shop)) or {}).get("tech") for shop in SHOPS]
        return techs == [WEBMASTER] * len(SHOPS)

    await eventually(all_changed, timeout=30, what="the 30 changes applied")
    await go_to(owner, "My requests")
    row = owner.locator("li.batch")
    await expect(row).to_have_count(1)
    await expect(row.get_by_role("heading")).to_have_text("30 contact changes asked together")
    await row.get_by_text("The requests").click()
    await expect(row.get_by_test_id("batch-requests").locator("li")).to_have_count(30)
    await expect(row.get_by_test_id("batch-requests")).to_contain_text("Done")
    await screenshot(owner, world, "requests-batch-row", docs=True)

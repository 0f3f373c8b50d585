"""Issue 20, languages, in Chromium: a browser set to French gets the sign-in page in French
(Accept-Language), and a French account reads its request and My contacts in French, whatever
the browser, with `<html lang="fr">`; an English account's pages stay English."""

from __future__ import annotations

import pytest
from browser.helpers import Person, assert_accessible_basics, link_in, screenshot
from contacts_shared.contracts import AccountUpserted, Zone
from playwright.async_api import expect
from seed import HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of
from support import System, eventually

pytestmark = pytest.mark.e2e


async def test_a_french_webmaster_confirms_and_reads_the_pages_in_french(world: System, person: Person) -> None:
    await world.publish(AccountUpserted(nic=WEBMASTER, email=email_of(WEBMASTER), zone=Zone.EU, language="fr"))
    await eventually(
        lambda: world.sql("requests", "SELECT 1 FROM accounts WHERE nic = $1 AND language = 'fr'", WEBMASTER), what="the webmaster's language"
    )
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    (mail,) = await world.wait_mails(email_of(WEBMASTER), "À confirmer")

    # A browser set to French: the sign-in page on the way from the email's link is in French.
    page = await person(locale="fr-FR")
    await page.goto(link_in(mail))
    await expect(page.locator("html")).to_have_attribute("lang", "fr")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Connexion")
    await assert_accessible_basics(page)
    await page.get_by_label("Identifiant NIC").fill(WEBMASTER)
    await page.get_by_role("button", name="Connexion").click()

    # The request, in French, the code from the link filled in.
    await expect(page.get_by_test_id("me")).to_have_text(WEBMASTER)
    await expect(page.locator("html")).to_have_attribute("lang", "fr")
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Contact technique de {HOSTING}")
    await expect(page.get_by_label("Votre code de validation")).to_have_value(mail.token)
    await page.get_by_role("button", name="Accepter").click()
    await expect(page.locator(".notice")).to_have_text("Vous avez accepté cette demande.")
    await expect(page.get_by_test_id("waiting")).to_contain_text(f"attend encore la confirmation de {OWNER}")
    await expect(page.get_by_test_id("progress")).to_have_text(f"accepté par {WEBMASTER}, en attente de {OWNER}")
    await expect(page.get_by_test_id("state")).to_have_text("En attente de confirmation")
    await expect(page.get_by_test_id("codes")).to_contain_text("accepté")
    await assert_accessible_basics(page)
    await screenshot(page, world, "fr-request", docs=True)

    # The owner confirms too (by the API, in English); the webmaster is now the technical contact.
    owner_mail = await world.token_mail(email_of(OWNER), request_id)
    assert (await world.act(OWNER, request_id, "accept", owner_mail.token)).status_code == 200
    await world.wait_state(OWNER, request_id, "done")

    await page.get_by_role("navigation", name="Principal").get_by_role("link", name="Mes contacts").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Mes contacts")
    row = page.locator(f'tr[data-service="{HOSTING}"]')
    await expect(row.locator('[data-contact="tech"]')).to_have_text(WEBMASTER)
    await expect(row).to_contain_text("technique")
    await expect(row.get_by_role("link", name=f"Modifier les contacts de {HOSTING}")).to_be_visible()
    await assert_accessible_basics(page)
    await screenshot(page, world, "fr-contacts", docs=True)

    await page.goto(f"/requests/{request_id}")
    await expect(page.get_by_test_id("state")).to_have_text("Effectuée")
    await expect(page.locator(".history")).to_contain_text("En attente de confirmation")

    # An English account in the same system reads English, as its browser does.
    owner = await person(OWNER)
    await expect(owner.locator("html")).to_have_attribute("lang", "en")
    await expect(owner.locator(f'tr[data-service="{HOSTING}"] [data-contact="tech"]')).to_have_text(WEBMASTER)
    assert OLD_TECH not in await owner.locator(f'tr[data-service="{HOSTING}"]').inner_text()

"""Issue 20, languages: an account's language (`account.upserted`) reaches its emails. A French
webmaster gets the code and the outcome in French, said by `Content-Language: fr`, while the
English owner and the previous contact of the same request get English."""

from __future__ import annotations

import pytest
from contacts_shared.contracts import AccountUpserted, Zone
from seed import HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of
from support import System, eventually

pytestmark = pytest.mark.e2e


async def test_a_french_account_gets_its_emails_in_french_and_an_english_one_in_english(world: System) -> None:
    await world.publish(AccountUpserted(nic=WEBMASTER, email=email_of(WEBMASTER), zone=Zone.EU, language="fr"))
    await eventually(
        lambda: world.sql("requests", "SELECT 1 FROM accounts WHERE nic = $1 AND language = 'fr'", WEBMASTER), what="the webmaster's language"
    )

    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})

    # The codes: each confirmer's in their language, with the same link to the request.
    (french,) = await world.wait_mails(email_of(WEBMASTER), "À confirmer")
    assert french.subject == f"À confirmer\u00a0: nouveau contact technique pour {HOSTING}"
    assert french.headers["Content-Language"] == "fr"
    assert f"{OWNER} demande que {WEBMASTER} devienne le contact technique de {HOSTING}" in french.body
    assert "Votre code de validation personnel" in french.body and "UTC" in french.body
    assert french.request_id == request_id
    english = await world.token_mail(email_of(OWNER), request_id)
    assert english.subject == f"Please confirm: new technical contact for {HOSTING}"
    assert english.headers["Content-Language"] == "en" and "Your personal validation code" in english.body
    # The previous technical contact is told beforehand, in English (their account's default).
    (heads_up,) = await world.wait_mails(email_of(OLD_TECH), "Heads-up")
    assert heads_up.headers["Content-Language"] == "en"

    # Both confirm with the codes of their emails, whatever language they were written in.
    for nic, mail in ((WEBMASTER, french), (OWNER, english)):
        assert (await world.act(nic, request_id, "accept", mail.token)).status_code == 200
    await world.wait_state(OWNER, request_id, "done")

    (done_fr,) = await world.wait_mails(email_of(WEBMASTER), "Changement de contact effectué")
    assert done_fr.subject == f"Changement de contact effectué pour {HOSTING}"
    assert done_fr.headers["Content-Language"] == "fr"
    assert f"{WEBMASTER} est désormais le contact technique" in done_fr.body and f"Demande {request_id}" in done_fr.body
    for nic in (OWNER, OLD_TECH):
        (done_en,) = await world.wait_mails(email_of(nic), "Contact change done")
        assert done_en.headers["Content-Language"] == "en" and f"{WEBMASTER} is now the technical contact" in done_en.body

    # The mail log keeps the language each email was written in.
    rows = await world.sql("notifier", "SELECT nic, kind, language FROM mails WHERE request_id::text = $1 ORDER BY id", request_id)
    assert {(r["nic"], r["kind"], r["language"]) for r in rows} == {
        (WEBMASTER, "token", "fr"),
        (OWNER, "token", "en"),
        (OLD_TECH, "outcome", "en"),  # the heads-up
        (WEBMASTER, "outcome", "fr"),
        (OWNER, "outcome", "en"),
    }
    # The API stays English for everybody.
    async with world.api(WEBMASTER) as client:
        refused = await client.post(f"/v1/contact-changes/{request_id}/cancel")
    assert refused.status_code == 403 and refused.json()["detail"] == "Only the requester can cancel a request."

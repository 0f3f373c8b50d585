"""Spec section 4: tokens are personal, single use, locked after 5 wrong tries, rotated by
resend to the account's current email, and expire."""

from __future__ import annotations

import asyncio

import pytest
from contacts_shared.contracts import AccountUpserted, Zone
from seed import HOSTING, OLD_TECH, OWNER, STRANGER, WEBMASTER, email_of
from support import System, eventually

pytestmark = pytest.mark.e2e

INVALID = "Invalid validation code"


async def _submitted(system: System) -> tuple[str, str, str]:
    """A request waiting for the owner and the webmaster; returns (id, owner token, webmaster token)."""
    request_id = await system.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    owner = await system.token_mail(email_of(OWNER), request_id)
    webmaster = await system.token_mail(email_of(WEBMASTER), request_id)
    return request_id, owner.token, webmaster.token


async def new_email(system: System, nic: str, email: str) -> None:
    """`nic`'s account changes its email, and the requests service knows it."""
    await system.publish(AccountUpserted(nic=nic, email=email, zone=Zone.EU))

    async def changed() -> bool:
        rows = await system.sql("requests", "SELECT email FROM accounts WHERE nic = $1", nic)
        return rows[0]["email"] == email

    await eventually(changed, what=f"{nic}'s new email")


async def test_token_is_single_use(world: System) -> None:
    request_id, _, token = await _submitted(world)
    assert (await world.act(WEBMASTER, request_id, "accept", token)).status_code == 200
    # A used code gets the one generic refusal (spec 4), for accept and decline alike.
    for action in ("accept", "decline"):
        again = await world.act(WEBMASTER, request_id, action, token)
        assert again.status_code == 422 and again.json()["title"] == INVALID, again.text
    assert (await world.request(OWNER, request_id))["state"] == "validating"


async def test_token_is_personal(world: System) -> None:
    request_id, owner_token, webmaster_token = await _submitted(world)
    response = await world.act(WEBMASTER, request_id, "accept", owner_token)
    assert response.status_code == 422 and response.json()["title"] == INVALID
    # The owner's token still works for the owner, the webmaster's for the webmaster.
    assert (await world.act(OWNER, request_id, "accept", owner_token)).status_code == 200
    assert (await world.act(WEBMASTER, request_id, "accept", webmaster_token)).status_code == 200
    await world.wait_state(OWNER, request_id, "done")


async def test_a_party_who_is_not_a_confirmer_cannot_answer_and_others_see_nothing(world: System) -> None:
    request_id, owner_token, _ = await _submitted(world)
    response = await world.act(OLD_TECH, request_id, "accept", owner_token)
    assert response.status_code == 403, response.text
    assert (await world.act(STRANGER, request_id, "accept", owner_token)).status_code == 404


async def test_only_the_requester_and_the_confirmers_may_resend(world: System) -> None:
    request_id, _, _ = await _submitted(world)
    refused = await world.act(OLD_TECH, request_id, "resend")  # a party, but no confirmer
    assert refused.status_code == 403, refused.text
    assert (await world.act(STRANGER, request_id, "resend")).status_code == 404
    assert (await world.act(WEBMASTER, request_id, "resend")).status_code == 202
    await world.token_mail(email_of(WEBMASTER), request_id, count=2)


async def test_five_wrong_tokens_lock_until_resend(world: System) -> None:
    request_id, _, token = await _submitted(world)
    for attempt in range(5):
        response = await world.act(WEBMASTER, request_id, "accept", f"wrong-{attempt}")
        assert response.status_code == 422 and response.json()["title"] == INVALID
    locked = await world.act(WEBMASTER, request_id, "accept", token)
    assert locked.status_code == 422 and locked.json()["title"] == INVALID  # same generic answer

    assert (await world.act(WEBMASTER, request_id, "resend")).status_code == 202
    fresh = await world.token_mail(email_of(WEBMASTER), request_id, count=2)
    assert fresh.token != token
    assert (await world.act(WEBMASTER, request_id, "accept", fresh.token)).status_code == 200


async def test_resend_rotates_tokens_and_mails_the_current_email(world: System) -> None:
    request_id, owner_token, old_token = await _submitted(world)
    assert (await world.act(OWNER, request_id, "accept", owner_token)).status_code == 200
    await new_email(world, WEBMASTER, "webmaster@new-agency.test")
    response = await world.act(OWNER, request_id, "resend")
    assert response.status_code == 202, response.text
    fresh = await world.token_mail("webmaster@new-agency.test", request_id)
    # Only those who have not answered get a new token.
    assert len([m for m in world.mails(email_of(OWNER), "please confirm")]) == 1

    stale = await world.act(WEBMASTER, request_id, "accept", old_token)
    assert stale.status_code == 422 and stale.json()["title"] == INVALID
    assert (await world.act(WEBMASTER, request_id, "accept", fresh.token)).status_code == 200
    await world.wait_state(OWNER, request_id, "done")
    await world.wait_mails("webmaster@new-agency.test", "contact change done")


class TestExpiry:
    """Short lifetimes: tokens last 2 s from when they are mailed, requests 6 s from submission
    (room for a slow notifier under load before the request itself expires)."""

    @pytest.fixture
    def system_settings(self) -> dict[str, str]:
        return {"CONTACTS_TOKEN_TTL": "2", "CONTACTS_REQUEST_TTL": "6"}

    async def test_token_expires_then_request_expires(self, world: System) -> None:
        request_id, owner_token, _ = await _submitted(world)
        # Waiting for the clock is the condition here: the token's 2 s count from its email,
        # which arrived before we read it, so 2.2 s from now is past its expiry.
        await asyncio.sleep(2.2)
        response = await world.act(OWNER, request_id, "accept", owner_token)
        assert response.status_code == 422 and response.json()["title"] == INVALID

        expired = await world.wait_state(OWNER, request_id, "expired", timeout=10)
        assert expired["history"][-1]["actor"] == "system"
        await world.wait_mails(email_of(OWNER), "expired")
        await world.wait_mails(email_of(WEBMASTER), "expired")


async def test_each_party_sees_where_and_when_each_code_was_mailed(world: System) -> None:
    """The request shows, per confirmer, the masked address the current code went to and when;
    a resend to a changed address shows the new one, mailed later."""
    request_id, owner_token, _ = await _submitted(world)

    async def mailed(after: str = "") -> dict[str, dict] | None:
        view = await world.request(OWNER, request_id)
        confirmers = {c["nic"]: c for c in view["confirmers"]}
        return confirmers if all(c["sent_to"] and c["sent_at"] > after for c in confirmers.values()) else None

    first = await eventually(mailed, what="both codes' addresses on the request")
    assert {nic: c["sent_to"] for nic, c in first.items()} == {OWNER: "a•••@example.test", WEBMASTER: "b•••@example.test"}
    seen_by_webmaster = await world.request(WEBMASTER, request_id)
    assert email_of(OWNER) not in str(seen_by_webmaster) and email_of(WEBMASTER) not in str(seen_by_webmaster)

    assert (await world.act(OWNER, request_id, "accept", owner_token)).status_code == 200
    await new_email(world, WEBMASTER, "webmaster@new-agency.test")
    assert (await world.act(OWNER, request_id, "resend")).status_code == 202
    await world.token_mail("webmaster@new-agency.test", request_id)

    async def mailed_anew() -> dict | None:
        view = await world.request(OWNER, request_id)
        webmaster = next(c for c in view["confirmers"] if c["nic"] == WEBMASTER)
        return webmaster if webmaster["sent_to"] == "w•••@new-agency.test" else None

    again = await eventually(mailed_anew, what="the new code's address on the request")
    assert again["sent_at"] > first[WEBMASTER]["sent_at"]
    owner = next(c for c in (await world.request(OWNER, request_id))["confirmers"] if c["nic"] == OWNER)
    assert owner == {**first[OWNER], "state": "accepted", "answered_at": owner["answered_at"]}  # answered: no new code

"""The support desk, against the running services, a real SMTP sink and the bus: an agent (the
identity provider's role `support`) looks up any service and account, cancels a request, unlocks
a confirmer's code and resends codes, each for a reason written in the history under their name
and announced on the bus; they answer for nobody; anyone without the role gets 404 everywhere."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from contacts_shared.auth import mint_token
from seed import HOSTING, OLD_TECH, OWNER, STRANGER, WEBMASTER, email_of
from support import System

pytestmark = pytest.mark.e2e

AGENT = "zz99999-ovh"  # a support agent: no customer account, no contact of anything
ACTOR = f"support:{AGENT}"
REASON = "ticket 4411: the customer called"


async def as_agent(world: System, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with world.api(AGENT, agent=True) as client:
        return await client.request(method, f"/v1/support{path}", **kwargs)


async def a_request_with_codes_mailed(world: System) -> tuple[str, str, str]:
    """The owner asks to make the webmaster the technical contact: (its id, the owner's code,
    the webmaster's code)."""
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    owner = await world.token_mail(email_of(OWNER), request_id)
    webmaster = await world.token_mail(email_of(WEBMASTER), request_id)
    return request_id, owner.token, webmaster.token


def history_by(view: dict[str, Any], actor: str) -> list[str]:
    return [h["reason"] for h in view["history"] if h["actor"] == actor]


async def test_an_agent_looks_up_any_service_and_any_account_with_their_requests(world: System) -> None:
    request_id, _, _ = await a_request_with_codes_mailed(world)

    response = await as_agent(world, "GET", f"/services/{quote(HOSTING, safe='')}")
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["service"]["contacts"] == {"admin": OWNER, "tech": OLD_TECH, "billing": "dd44444-ovh"}
    (item,) = found["items"]
    assert item["id"] == request_id and item["state"] == "validating"
    assert {c["nic"]: (c["locked"], c["sent_to"] is not None) for c in item["confirmers"]} == {
        OWNER: (False, True), WEBMASTER: (False, True),
    }  # fmt: skip
    assert [h["actor"] for h in item["history"]][:1] == [OWNER]

    response = await as_agent(world, "GET", f"/accounts/{WEBMASTER}/contact-changes")
    assert response.status_code == 200, response.text
    assert response.json()["account"] == {"nic": WEBMASTER, "email": email_of(WEBMASTER), "zone": "EU", "language": "en"}
    assert [i["id"] for i in response.json()["items"]] == [request_id]
    # A customer account with no request: found, with nothing in it; an unknown one: not found.
    assert (await as_agent(world, "GET", f"/accounts/{STRANGER}/contact-changes")).json()["items"] == []
    assert (await as_agent(world, "GET", "/accounts/yy00000-ovh/contact-changes")).status_code == 404
    assert (await as_agent(world, "GET", "/services/nothing.example")).status_code == 404


async def test_an_agent_cancels_for_a_reason_the_parties_are_told_the_history_and_the_bus_say_who(world: System) -> None:
    request_id, _, webmaster_code = await a_request_with_codes_mailed(world)

    response = await as_agent(world, "POST", f"/contact-changes/{request_id}/cancel", json={"reason": REASON})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"

    for nic in (OWNER, WEBMASTER):
        (mail,) = await world.wait_mails(email_of(nic), "cancelled")
        assert f"cancelled by support: {REASON}" in mail.body
    view = await world.request(OWNER, request_id)
    assert (view["state"], view["reason"]) == ("cancelled", f"cancelled by support: {REASON}")
    assert history_by(view, ACTOR) == [f"cancelled by support: {REASON}"]
    assert world.capture is not None
    acted = await world.capture.wait_for("contact_change.support_acted", request_id=request_id)
    assert {k: acted["data"][k] for k in ("agent", "action", "reason", "confirmer")} == {
        "agent": AGENT, "action": "cancel", "reason": REASON, "confirmer": None,
    }  # fmt: skip
    await world.capture.wait_for("contact_change.state_changed", request_id=request_id, state="cancelled")
    # The codes mailed before do nothing now; a second cancel is refused.
    assert (await world.act(WEBMASTER, request_id, "accept", webmaster_code)).status_code == 409
    again = await as_agent(world, "POST", f"/contact-changes/{request_id}/cancel", json={"reason": REASON})
    assert again.status_code == 409


async def test_an_agent_unlocks_a_code_locked_by_wrong_tries_and_it_works_again(world: System) -> None:
    request_id, owner_code, webmaster_code = await a_request_with_codes_mailed(world)
    for _ in range(5):
        assert (await world.act(WEBMASTER, request_id, "accept", "not-the-code")).status_code == 422
    assert (await world.act(WEBMASTER, request_id, "accept", webmaster_code)).status_code == 422, "not locked"
    seen = (await as_agent(world, "GET", f"/contact-changes/{request_id}")).json()
    assert {c["nic"]: c["locked"] for c in seen["confirmers"]} == {OWNER: False, WEBMASTER: True}

    unlock = f"/contact-changes/{request_id}/confirmers/{WEBMASTER}/unlock"
    response = await as_agent(world, "POST", unlock, json={"reason": REASON})
    assert response.status_code == 200, response.text
    assert {c["nic"]: c["locked"] for c in response.json()["confirmers"]} == {OWNER: False, WEBMASTER: False}
    assert (await as_agent(world, "POST", unlock, json={"reason": REASON})).status_code == 409  # not locked now

    assert (await world.act(WEBMASTER, request_id, "accept", webmaster_code)).status_code == 200
    assert (await world.act(OWNER, request_id, "accept", owner_code)).status_code == 200
    view = await world.wait_state(OWNER, request_id, "done")
    assert history_by(view, ACTOR) == [f"the validation code of {WEBMASTER} unlocked: {REASON}"]
    assert world.capture is not None
    acted = await world.capture.wait_for("contact_change.support_acted", request_id=request_id, action="unlock")
    assert (acted["data"]["agent"], acted["data"]["confirmer"]) == (AGENT, WEBMASTER)


async def test_an_agent_resends_new_codes_the_old_ones_stop_working(world: System) -> None:
    request_id, owner_code, first = await a_request_with_codes_mailed(world)
    assert (await world.act(OWNER, request_id, "accept", owner_code)).status_code == 200

    response = await as_agent(world, "POST", f"/contact-changes/{request_id}/resend", json={"reason": REASON})
    assert response.status_code == 202, response.text
    second = (await world.token_mail(email_of(WEBMASTER), request_id, count=2)).token
    assert second != first
    assert len([m for m in world.mails(email_of(OWNER), "please confirm") if m.request_id == request_id]) == 1, "answered"
    assert (await world.act(WEBMASTER, request_id, "accept", first)).status_code == 422
    assert (await world.act(WEBMASTER, request_id, "accept", second)).status_code == 200
    view = await world.wait_state(OWNER, request_id, "done")
    assert history_by(view, ACTOR) == [f"validation codes sent again to {WEBMASTER}: {REASON}"]
    assert world.capture is not None
    await world.capture.wait_for("contact_change.support_acted", request_id=request_id, action="resend", agent=AGENT)


async def test_an_agent_answers_for_nobody_and_changes_no_contact_directly(world: System) -> None:
    request_id, _, webmaster_code = await a_request_with_codes_mailed(world)
    async with world.api(AGENT, agent=True) as client:
        for action in ("accept", "decline"):
            response = await client.post(f"/v1/contact-changes/{request_id}/{action}", json={"token": webmaster_code})
            assert response.status_code == 404, response.text
        submitted = await client.post(f"/v1/services/{quote(HOSTING, safe='')}/contact-changes", json={"tech": AGENT})
        assert submitted.status_code == 404, submitted.text
        # No support route answers or changes a contact: the document lists none.
        paths = (await client.get("/openapi.json")).json()["paths"]
        support_posts = sorted(p for p, ops in paths.items() if p.startswith("/v1/support/") and "post" in ops)
        assert sorted(p.rsplit("/", 1)[1] for p in support_posts) == ["cancel", "resend", "unlock"]
    view = await world.request(OWNER, request_id)
    assert {c["nic"]: c["state"] for c in view["confirmers"]} == {OWNER: "pending", WEBMASTER: "pending"}


async def test_without_the_support_role_every_support_route_is_not_found(world: System) -> None:
    request_id, _, _ = await a_request_with_codes_mailed(world)
    routes = [
        ("GET", f"/v1/support/services/{quote(HOSTING, safe='')}", None),
        ("GET", f"/v1/support/accounts/{WEBMASTER}/contact-changes", None),
        ("GET", f"/v1/support/contact-changes/{request_id}", None),
        ("POST", f"/v1/support/contact-changes/{request_id}/cancel", {"reason": REASON}),
        ("POST", f"/v1/support/contact-changes/{request_id}/resend", {"reason": REASON}),
        ("POST", f"/v1/support/contact-changes/{request_id}/confirmers/{WEBMASTER}/unlock", {"reason": REASON}),
    ]
    other_role = mint_token(world.jwt_secret, AGENT, roles=["billing", "supporter"])
    callers = {"a party": world.jwt(OWNER), "a stranger": world.jwt(STRANGER), "another role": other_role}
    async with httpx.AsyncClient(base_url=world.api_url, timeout=15) as client:
        for who, token in callers.items():
            for method, path, body in routes:
                bearer = {"Authorization": f"Bearer {token}"}
                response = await client.request(method, path, json=body, headers=bearer)
                assert (response.status_code, response.json()["title"]) == (404, "Not found"), f"{who}: {method} {path}"
                if method == "POST":  # refused before the body is even read
                    broken = await client.request(method, path, content=b"{not json", headers=bearer)
                    assert broken.status_code == 404, f"{who}: {method} {path} with a broken body"
        for method, path, body in routes:
            assert (await client.request(method, path, json=body)).status_code == 401, f"not signed in: {path}"
    # Nothing happened to the request.
    view = await world.request(OWNER, request_id)
    assert view["state"] == "validating" and history_by(view, ACTOR) == []

"""Cross-site requests: another site's page makes the victim's browser send a form (with the
session cookie: browsers send a SameSite=Lax cookie on a top-level POST navigation only in some
cases, so the test assumes the worst and sends it). Neither the JSON API nor the pages act on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from security.table import tried
from seed import HOSTING, OWNER, WEBMASTER, email_of
from support import System

EVIL = "https://evil.example.test"


@pytest.fixture(scope="module")
async def open_request(world: System) -> str:
    """A request waiting for its confirmers, whose codes are already mailed."""
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    await world.token_mail(email_of(WEBMASTER), request_id)
    return request_id


@pytest.fixture
async def victims_browser(world: System) -> AsyncIterator[httpx.AsyncClient]:
    """The owner's browser: signed in to the pages (the session cookie), on another site."""
    async with httpx.AsyncClient(base_url=world.api_url, timeout=15, headers={"Origin": EVIL, "Referer": f"{EVIL}/prize"}) as browser:
        browser.cookies.set("contacts_session", world.jwt(OWNER))
        yield browser


async def still_open(world: System, request_id: str) -> None:
    async with world.api(OWNER) as owner:
        view = (await owner.get(f"/v1/contact-changes/{request_id}")).json()
    assert view["state"] == "validating", view["state"]


ATTACKS = {
    # what the forged form does: (method, path template, body, content type)
    "API cancel": ("/v1/contact-changes/{id}/cancel", "", "application/x-www-form-urlencoded"),
    "API resend": ("/v1/contact-changes/{id}/resend", "", "application/x-www-form-urlencoded"),
    "API submission as text/plain JSON": (f"/v1/services/{HOSTING}/contact-changes", '{"tech": "' + WEBMASTER + '"}', "text/plain"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_the_api_takes_no_change_on_a_session_cookie_alone(
    world: System, open_request: str, victims_browser: httpx.AsyncClient, attack: str
) -> None:
    path, body, content_type = ATTACKS[attack]
    before = (await world.sql("requests", "SELECT count(*) AS n FROM contact_changes"))[0]["n"]
    mails = len(world.sink.store.messages())
    response = await victims_browser.post(path.format(id=open_request), content=body, headers={"Content-Type": content_type})
    assert response.status_code == 401, response.text
    assert "Bearer" in response.json()["detail"]
    await still_open(world, open_request)
    assert (await world.sql("requests", "SELECT count(*) AS n FROM contact_changes"))[0]["n"] == before
    assert len(world.sink.store.messages()) == mails, "a code was resent"
    tried(f"cross-site form to the {attack}, with the session cookie", "401: changes through the API need a Bearer header")


async def test_the_api_still_reads_with_the_session_cookie(world: System, open_request: str, victims_browser: httpx.AsyncClient) -> None:
    """Reading is harmless cross-site (the other site cannot read the answer), and /docs uses it."""
    response = await victims_browser.get(f"/v1/contact-changes/{open_request}")
    assert response.status_code == 200


@pytest.mark.parametrize("csrf", ["none", "another session's"])
async def test_the_pages_take_no_form_without_their_csrf_token(
    world: System, open_request: str, victims_browser: httpx.AsyncClient, csrf: str
) -> None:
    form = {"action": "cancel"}
    if csrf != "none":
        async with httpx.AsyncClient(base_url=world.api_url) as attacker:  # the attacker's own session
            attacker.cookies.set("contacts_session", world.jwt(WEBMASTER))
            page = (await attacker.get(f"/requests/{open_request}")).text
        form["csrf"] = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    response = await victims_browser.post(f"/requests/{open_request}", data=form)
    assert response.status_code == 403, response.status_code
    await still_open(world, open_request)
    tried(f"cross-site form to the pages' cancel, CSRF token: {csrf}", "403 \"This form cannot be accepted\"")

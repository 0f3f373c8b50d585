"""The pages' own logic, without a database: what the forms offer, how progress reads, and the
sign-in and CSRF doors (through the ASGI app, on pages that need no database)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from contacts_requests.api import create_api
from contacts_requests.domain import ServiceContacts, refusal_to_change
from contacts_requests.page_views import describe
from contacts_shared.auth import mint_token
from contacts_shared.contracts import ContactType
from fastapi.testclient import TestClient

SECRET = "s" * 32
ADMIN, TECH, BILLING = "aa1-ovh", "bb2-ovh", "cc3-ovh"


@pytest.mark.parametrize(
    ("service", "me", "editable"),
    [
        (ServiceContacts("plan", ADMIN, TECH, BILLING), ADMIN, {"admin", "tech", "billing"}),
        (ServiceContacts("plan", ADMIN, TECH, BILLING), TECH, {"tech"}),
        (ServiceContacts("plan", ADMIN, TECH, BILLING), BILLING, {"billing"}),
        (ServiceContacts("plan", ADMIN, TECH, TECH), TECH, {"tech", "billing"}),
        (ServiceContacts("plan", ADMIN, ADMIN, BILLING), ADMIN, {"admin", "tech", "billing"}),
    ],
)
def test_the_form_offers_what_the_rules_allow(service: ServiceContacts, me: str, editable: set[str]) -> None:
    allowed = {t.value for t in ContactType if refusal_to_change(me, service, t) is None}
    assert allowed == editable
    for t in ContactType:
        if t.value not in editable:
            assert "may only replace yourself" in (refusal_to_change(me, service, t) or "")


def view(state: str, confirmers: dict[str, str]) -> dict:
    return {
        "id": "0b4c3a55-0000-4000-8000-000000000000",
        "service": "plan",
        "type": "tech",
        "from": TECH,
        "to": "dd4-ovh",
        "requester": ADMIN,
        "state": state,
        "confirmers": [{"nic": n, "state": s} for n, s in confirmers.items()],
    }


def test_progress_and_actions_read_like_the_guide() -> None:
    item = describe(view("validating", {ADMIN: "pending", "dd4-ovh": "accepted"}), ADMIN)
    assert item["progress"] == f"accepted by dd4-ovh, waiting for {ADMIN}"
    assert item["waiting_for"] == [ADMIN]
    assert item["may_answer"] and item["may_resend"] and item["may_cancel"]
    # The previous contact sees it, but neither answers, resends nor cancels (spec 4).
    item = describe(view("validating", {ADMIN: "pending", "dd4-ovh": "accepted"}), TECH)
    assert (item["may_answer"], item["may_resend"], item["may_cancel"]) == (False, False, False)
    item = describe(view("declined", {ADMIN: "accepted", "dd4-ovh": "declined"}), ADMIN)
    assert item["progress"] == f"accepted by {ADMIN}, declined by dd4-ovh"
    assert not (item["may_answer"] or item["may_resend"] or item["may_cancel"])
    assert describe(view("rejected", {ADMIN: "pending"}), ADMIN)["progress"] == "nobody was asked to confirm"


def client(*, dev_login: bool, https: bool = False) -> TestClient:
    app = create_api(pool=None, jwt_secret=SECRET, request_ttl=timedelta(days=1), dev_login=dev_login)
    return TestClient(app, base_url="https://contacts.test" if https else "http://contacts.test")


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert match, html
    return match.group(1)


def test_without_dev_login_a_pasted_identity_token_signs_in_with_a_secure_cookie_on_https() -> None:
    web = client(dev_login=False, https=True)
    page = web.get("/signin?next=/requests/x%3Ftoken%3Dabc")
    assert "identity provider" in page.text and 'name="nic"' not in page.text
    assert 'value="/requests/x?token=abc"' in page.text  # the confirm link survives the detour
    csrf = csrf_of(page.text)
    refused = web.post("/signin", data={"csrf": csrf, "jwt": "not-a-jwt", "next": "/contacts"}, follow_redirects=False)
    assert refused.status_code == 422 and "not valid" in refused.text
    token = mint_token(SECRET, ADMIN)
    signed = web.post("/signin", data={"csrf": csrf, "jwt": token, "next": "/requests/x?token=abc"}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/requests/x?token=abc"
    cookie = signed.headers["set-cookie"]
    assert "contacts_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie and "SameSite=lax" in cookie


def test_dev_login_refuses_a_post_without_its_csrf_token_or_from_another_origin() -> None:
    web = client(dev_login=True)
    csrf = csrf_of(web.get("/signin").text)
    form = {"csrf": csrf, "nic": "AA1-OVH", "next": "https://attacker.example/"}
    assert web.post("/signin", data={**form, "csrf": ""}, follow_redirects=False).status_code == 403
    foreign = web.post("/signin", data=form, headers={"Origin": "https://attacker.example"}, follow_redirects=False)
    assert foreign.status_code == 403
    fresh = TestClient(web.app, base_url="http://contacts.test")  # no CSRF cookie at all
    assert fresh.post("/signin", data=form, follow_redirects=False).status_code == 403
    signed = web.post("/signin", data=form, headers={"Origin": "http://contacts.test"}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/contacts"  # never off-site
    assert "Secure" not in signed.headers["set-cookie"]


def test_pages_send_people_without_a_session_to_sign_in_keeping_the_link() -> None:
    web = client(dev_login=True)
    response = web.get("/requests/0b4c3a55-0000-4000-8000-000000000000?token=abc", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=%2Frequests%2F0b4c3a55-0000-4000-8000-000000000000%3Ftoken%3Dabc"
    assert web.get("/v1/me/contacts").status_code == 401  # the JSON API is unchanged: problem details

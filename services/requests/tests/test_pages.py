"""The pages' own logic: what the forms offer, how progress reads, and the sign-in and CSRF doors
(through the ASGI app, on pages that need no database); then the support desk's pages through
the app in process on a real PostgreSQL schema of their own."""

from __future__ import annotations

import contextlib
import html
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import httpx
import pytest
from contacts_requests import schema
from contacts_requests.api import create_api
from contacts_requests.consumers import HANDLERS
from contacts_requests.domain import (
    ReminderSchedule,
    ServiceContacts,
    refusal_to_change,
)
from contacts_requests.page_views import describe
from contacts_shared.auth import mint_token
from contacts_shared.contracts import (
    AccountUpserted,
    ContactChangeTokenIssued,
    ContactChangeVetted,
    ContactType,
    Contract,
    Phase,
    ServiceUpserted,
    Zone,
    envelope_for,
    hash_token,
    utcnow,
)
from contacts_shared.handling import by_routing_key
from contacts_tools.testing import schema_pool
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


# --- the support desk's pages ---------------------------------------------------------------------

REQUEST_PATH = "/support/requests/0b4c3a55-0000-4000-8000-000000000000"
SUPPORT_PATHS = ("/support", "/support/services/plan.example", "/support/accounts/aa1-ovh", REQUEST_PATH, "/support/elsewhere")


def signed_in_client(nic: str, *, agent: bool) -> TestClient:
    """Signed in through the development sign-in, as an agent when `agent` (its box ticked)."""
    web = client(dev_login=True)
    form = {"csrf": csrf_of(web.get("/signin").text), "nic": nic, "next": "/support"}
    signed = web.post("/signin", data={**form, **({"agent": "1"} if agent else {})}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/support"
    return web


def test_a_customer_finds_no_support_desk_anywhere_not_even_by_posting() -> None:
    web = signed_in_client(ADMIN, agent=False)
    for path in SUPPORT_PATHS:
        page = web.get(path, follow_redirects=False)
        assert page.status_code == 404 and "<h1>Not found</h1>" in page.text, path
        assert 'href="/support"' not in page.text  # no Support link in the navigation
    # Answered before the form is read: no CSRF refusal that would tell the route exists.
    for path in (REQUEST_PATH, "/support/services/plan.example", "/support"):
        posted = web.post(path, data={"action": "cancel", "reason": "x"}, follow_redirects=False)
        assert posted.status_code == 404 and "<h1>Not found</h1>" in posted.text
    assert web.get("/v1/support/contact-changes/0b4c3a55-0000-4000-8000-000000000000").status_code == 404


def test_the_support_desk_sends_people_without_a_session_to_sign_in() -> None:
    web = client(dev_login=True)
    for method in ("GET", "POST"):
        response = web.request(method, REQUEST_PATH, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/signin?next=%2Fsupport%2Frequests%2F0b4c3a55-0000-4000-8000-000000000000"


def test_an_agent_looks_up_by_service_or_nic_and_mistakes_are_explained() -> None:
    web = signed_in_client("zz9-ovh", agent=True)
    page = web.get("/support")
    assert page.status_code == 200
    assert '<a href="/support" aria-current="page">Support</a>' in page.text
    found = web.get("/support", params={"service": " shop.example/plan 1 "}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == "/support/services/shop.example%2Fplan%201"
    found = web.get("/support", params={"nic": " AA1-OVH "}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == "/support/accounts/aa1-ovh"
    wrong = web.get("/support", params={"nic": "not a nic"})
    assert wrong.status_code == 422
    assert "is not a NIC handle" in wrong.text and 'aria-invalid="true"' in wrong.text and 'value="not a nic"' in wrong.text
    assert web.get("/support", params={"service": ""}).status_code == 422
    assert web.get("/support/accounts/not-a-nic").status_code == 422
    assert web.get("/support/", follow_redirects=False).headers["location"] == "/support"
    for elsewhere in (web.get("/support/elsewhere"), web.post("/support/elsewhere"), web.post("/support")):
        assert elsewhere.status_code == 404 and "no such page of the support desk" in elsewhere.text
    assert web.get(f"{REQUEST_PATH[:-3]}zzz").status_code == 404  # not a request id


def test_the_agent_box_exists_only_on_the_development_sign_in() -> None:
    assert "Sign in as a support agent" in client(dev_login=True).get("/signin").text
    assert "Sign in as a support agent" not in client(dev_login=False).get("/signin").text
    web = client(dev_login=True)
    refused = web.post("/signin", data={"csrf": csrf_of(web.get("/signin").text), "nic": "nope", "agent": "1"})
    assert refused.status_code == 422 and 'name="agent" value="1" checked' in refused.text  # kept ticked


# --- the support desk's pages on a database (the app in process, real PostgreSQL) ---------------

OWNER, WEBMASTER, OLD_TECH, BILLER, AGENT = "aa11111-ovh", "bb22222-ovh", "cc33333-ovh", "dd44444-ovh", "zz99999-ovh"
SHOP = "shop-example.web-hosting"
TTL = timedelta(days=14)


@pytest.fixture
async def shop() -> AsyncIterator[asyncpg.Pool]:
    """A database with the shop's accounts and hosting plan, fed as the bus would."""
    async with schema_pool("requests", schema.MIGRATIONS) as pool:
        accounts = [AccountUpserted(nic=nic, email=f"{nic}@shop-example.test", zone=Zone.EU) for nic in (OWNER, WEBMASTER, OLD_TECH, BILLER)]
        await deliver(pool, *accounts, ServiceUpserted(service=SHOP, type="web-hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER))
        yield pool


async def deliver(pool: asyncpg.Pool, *messages: Contract) -> None:
    handlers = by_routing_key(HANDLERS)
    reminders = ReminderSchedule(timedelta(days=3), timedelta(days=1), 2)
    for message in messages:
        envelope = envelope_for(message)
        async with pool.acquire() as conn, conn.transaction():
            await handlers[envelope.type](conn, envelope, message, request_ttl=TTL, reminders=reminders)


@contextlib.asynccontextmanager
async def browsing(pool: asyncpg.Pool, nic: str, *, agent: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in as `nic` through the development sign-in (its cookies kept)."""
    app = create_api(pool=pool, jwt_secret=SECRET, request_ttl=TTL, dev_login=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://contacts.test", follow_redirects=True) as web:
        form = {"csrf": csrf_of((await web.get("/signin")).text), "nic": nic, **({"agent": "1"} if agent else {})}
        assert (await web.post("/signin", data=form, follow_redirects=False)).status_code == 303
        yield web


def bearer(nic: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, nic)}"}


async def act(web: httpx.AsyncClient, path: str, *, follow_redirects: bool = True, **form: str) -> httpx.Response:
    """Press a button of the page at `path`: its form posted with the page's CSRF token."""
    return await web.post(path, data={"csrf": csrf_of((await web.get(path)).text), **form}, follow_redirects=follow_redirects)


async def test_an_agent_sees_and_acts_on_a_request_through_its_forms(shop: asyncpg.Pool) -> None:
    async with browsing(shop, AGENT, agent=True) as web:
        submitted = await web.post(f"/v1/services/{SHOP}/contact-changes", json={"tech": WEBMASTER}, headers=bearer(OWNER))
        rid = submitted.json()["items"][0]["id"]
        page_path = f"/support/requests/{rid}"

        # Being checked: only a cancel is possible.
        page = (await web.get(page_path)).text
        assert 'data-testid="cancel-form"' in page and "resend-form" not in page and "unlock-form" not in page

        # Validating, the webmaster's code locked by five wrong tries: unlock and resend offered.
        await deliver(
            shop,
            ContactChangeVetted(request_id=uuid.UUID(rid), phase=Phase.submit, approved=True),
            ContactChangeTokenIssued(
                request_id=uuid.UUID(rid), nic=WEBMASTER, token_hash=hash_token("code-w"), expires_at=utcnow() + TTL, generation=1
            ),
        )
        for _ in range(5):
            await web.post(f"/v1/contact-changes/{rid}/accept", json={"token": "wrong"}, headers=bearer(WEBMASTER))
        page = (await web.get(page_path)).text
        assert page.count('data-testid="locked"') == 1 and f'name="nic" value="{WEBMASTER}"' in page
        assert f'name="nic" value="{OWNER}"' not in page and 'data-testid="resend-form"' in page

        # A blank reason is refused next to the field of its form; what was typed stays.
        blank = await act(web, page_path, action="unlock", nic=WEBMASTER, reason="   ")
        assert blank.status_code == 422 and 'id="unlock-reason-error"' in blank.text and 'value="   "' in blank.text
        done = await act(web, page_path, action="unlock", nic=WEBMASTER, reason="ticket 4411", follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == f"{page_path}?notice=support-unlock"
        page = (await web.get(done.headers["location"])).text
        assert "The validation code was unlocked" in page and "unlock-form" not in page
        assert f"the validation code of {WEBMASTER} unlocked: ticket 4411" in page
        # A page left open, pressed again: the use case's refusal, above the forms, no 500.
        again = await web.post(page_path, data={"csrf": csrf_of(page), "action": "unlock", "nic": WEBMASTER, "reason": "again"})
        assert again.status_code == 409 and 'id="action-error"' in again.text and "is not locked" in again.text
        bogus = await web.post(page_path, data={"csrf": csrf_of(page), "action": "accept", "reason": "x"})
        assert bogus.status_code == 422 and "Choose one of the buttons." in bogus.text

        assert (await act(web, page_path, action="resend", reason="mails bounced")).status_code == 200
        cancelled = await act(web, page_path, action="cancel", reason="customer asked by phone")
        assert cancelled.status_code == 200 and "The request was cancelled" in cancelled.text
        assert f"support:{AGENT}" in cancelled.text and "cancelled by support: customer asked by phone" in cancelled.text
        assert 'data-testid="no-actions"' in cancelled.text and "<form method=\"post\" action=\"/support" not in cancelled.text
        late = await web.post(page_path, data={"csrf": csrf_of(cancelled.text), "action": "cancel", "reason": "twice"})
        assert late.status_code == 409 and 'value="twice"' not in late.text  # the form is gone: the error alone

        assert (await web.get(f"/support/requests/{uuid.uuid4()}")).status_code == 404
        gone = await web.post(f"/support/requests/{uuid.uuid4()}", data={"csrf": csrf_of(page), "action": "cancel", "reason": "x"})
        assert gone.status_code == 404


async def test_the_support_desk_pages_a_service_and_an_account_like_my_requests(shop: asyncpg.Pool) -> None:
    # 51 ended requests of the shop: one more than a page.
    async with shop.acquire() as conn:
        await conn.executemany(
            "INSERT INTO contact_changes (id, service, type, from_nic, to_nic, requester, state, created_at, expires_at)"
            " VALUES ($1, $2, 'tech', $3, $4, $5, 'cancelled', now() - make_interval(mins => $6), now())",
            [(uuid.uuid4(), SHOP, OLD_TECH, WEBMASTER, OWNER, i) for i in range(51)],
        )
    async with browsing(shop, AGENT, agent=True) as web:
        first = await web.get(f"/support/services/{SHOP}")
        assert first.status_code == 200 and first.text.count("<tr data-request=") == 50
        assert 'data-testid="service-type">web-hosting<' in first.text and f">{OLD_TECH}</a>" in first.text
        older = re.search(r'<a href="([^"]+)">Older requests</a>', first.text)
        assert older
        second = await web.get(html.unescape(older.group(1)))
        assert second.text.count("<tr data-request=") == 1 and "Older requests" not in second.text
        unknown = await web.get("/support/services/nothing.example")
        assert unknown.status_code == 404 and "No service “nothing.example” is known" in unknown.text

        account = await web.get(f"/support/accounts/{WEBMASTER.upper()}", params={"state": "cancelled"})
        assert f"{WEBMASTER}@shop-example.test" in account.text and 'data-testid="zone">EU<' in account.text
        assert account.text.count("<tr data-request=") == 50
        older = re.search(r'<a href="([^"]+)">Older requests</a>', account.text)
        assert older and "state=cancelled" in older.group(1)
        assert (await web.get(html.unescape(older.group(1)))).text.count("<tr data-request=") == 1
        none = await web.get(f"/support/accounts/{WEBMASTER}", params={"state": "done"})
        assert "No request in this state." in none.text
        assert (await web.get("/support/accounts/zz00000-ovh")).status_code == 404

    # My requests pages the same way (through `web.page_of` too).
    async with browsing(shop, OWNER) as web:
        first = await web.get("/requests")
        assert first.text.count('<li class="card request"') == 50
        older = re.search(r'<a href="([^"]+)">Older requests</a>', first.text)
        assert older
        assert (await web.get(html.unescape(older.group(1)))).text.count('<li class="card request"') == 1

"""The pages in their reader's language, through the app in process on a real PostgreSQL schema:
the signed-in account's language (from `account.upserted`), the browser's on the sign-in page,
English for the rest; the JSON API in English whoever asks."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import httpx
import pytest
from contacts_requests import schema
from contacts_requests.api import create_api
from contacts_requests.consumers import HANDLERS
from contacts_requests.domain import ReminderSchedule
from contacts_shared.auth import mint_token
from contacts_shared.contracts import (
    AccountUpserted,
    Contract,
    ServiceUpserted,
    Zone,
    envelope_for,
)
from contacts_shared.handling import by_routing_key
from contacts_tools.testing import schema_pool

SECRET = "s" * 32
TTL = timedelta(days=14)
OWNER, WEBMASTER, OLD_TECH, BILLER, QUEBEC, BERLIN = "aa11111-ovh", "bb22222-ovh", "cc33333-ovh", "dd44444-ovh", "qq11111-ovh", "de11111-ovh"
SHOP = "shop-example.web-hosting"
LANGUAGES = {OWNER: "en", WEBMASTER: "fr", OLD_TECH: "fr", BILLER: "en", QUEBEC: "fr-CA", BERLIN: "de"}


@pytest.fixture
async def shop() -> AsyncIterator[asyncpg.Pool]:
    """The shop's accounts, two of them French, one Canadian French, one German; its hosting plan."""
    async with schema_pool("requests", schema.MIGRATIONS) as pool:
        accounts = [AccountUpserted(nic=nic, email=f"{nic}@shop-example.test", zone=Zone.EU, language=tag) for nic, tag in LANGUAGES.items()]
        await deliver(pool, *accounts, ServiceUpserted(service=SHOP, type="web-hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER))
        yield pool


async def deliver(pool: asyncpg.Pool, *messages: Contract) -> None:
    handlers = by_routing_key(HANDLERS)
    reminders = ReminderSchedule(timedelta(days=3), timedelta(days=1), 2)
    for message in messages:
        envelope = envelope_for(message)
        async with pool.acquire() as conn, conn.transaction():
            await handlers[envelope.type](conn, envelope, message, request_ttl=TTL, reminders=reminders)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert match, html
    return match.group(1)


@contextlib.asynccontextmanager
async def browser(pool: asyncpg.Pool, nic: str | None = None, *, accept_language: str = "en-GB,en;q=0.9") -> AsyncIterator[httpx.AsyncClient]:
    """A browser sending `accept_language`, signed in as `nic` (development sign-in) when given."""
    app = create_api(pool=pool, jwt_secret=SECRET, request_ttl=TTL, dev_login=True)
    transport = httpx.ASGITransport(app=app)
    headers = {"Accept-Language": accept_language}
    async with httpx.AsyncClient(transport=transport, base_url="http://contacts.test", headers=headers, follow_redirects=True) as web:
        if nic:
            signed = await web.post("/signin", data={"csrf": csrf_of((await web.get("/signin")).text), "nic": nic}, follow_redirects=False)
            assert signed.status_code == 303
        yield web


def language_of(page: httpx.Response) -> str:
    match = re.search(r'<html lang="([^"]+)">', page.text)
    assert match, page.text[:200]
    assert page.headers["content-language"] == match.group(1)
    return match.group(1)


async def test_the_sign_in_page_follows_the_browser(shop: asyncpg.Pool) -> None:
    for accept, language, heading in (("fr-FR,fr;q=0.9,en;q=0.8", "fr", "Connexion"), ("en-GB,en", "en", "Sign in"), ("de-DE,de", "en", "Sign in")):
        async with browser(shop, accept_language=accept) as web:
            page = await web.get("/signin")
            assert language_of(page) == language and f"<h1>{heading}</h1>" in page.text, accept


async def test_a_signed_in_account_reads_every_page_in_its_language_whatever_the_browser(shop: asyncpg.Pool) -> None:
    async with browser(shop, WEBMASTER, accept_language="en-GB,en") as web:
        contacts = await web.get("/contacts")
        assert language_of(contacts) == "fr"
        assert "<h1>Mes contacts</h1>" in contacts.text and "Se déconnecter" in contacts.text
        assert "My contacts" not in contacts.text
        requests = await web.get("/requests")
        assert language_of(requests) == "fr" and "<h1>Mes demandes</h1>" in requests.text
    async with browser(shop, OWNER, accept_language="fr-FR,fr") as web:
        assert language_of(await web.get("/contacts")) == "en"  # the account's, not the browser's


async def test_a_tag_without_a_catalog_of_its_own_gets_the_nearest_or_english(shop: asyncpg.Pool) -> None:
    async with browser(shop, QUEBEC) as web:
        assert language_of(await web.get("/contacts")) == "fr"
    async with browser(shop, BERLIN, accept_language="fr") as web:
        assert language_of(await web.get("/contacts")) == "en"
    async with browser(shop, "xx99999-ovh", accept_language="fr") as web:  # no account known: the browser's
        assert language_of(await web.get("/contacts")) == "fr"


async def test_the_rules_speak_french_on_the_pages_and_english_in_the_api(shop: asyncpg.Pool) -> None:
    async with browser(shop, OLD_TECH) as web:
        form = await web.get("/contacts/modify", params={"service": SHOP})
        assert language_of(form) == "fr" and "<h1>Modifier les contacts</h1>" in form.text
        # The technical contact may only replace itself: the rule's words, in French.
        assert "Non modifiable\u00a0: en tant que contact technique, vous ne pouvez que vous remplacer vous-même" in form.text
        assert "Vous en êtes le contact technique." in form.text
        refused = await web.post(
            "/contacts/modify", data={"csrf": csrf_of(form.text), "service": SHOP, "tech": "zz00000-ovh", "idempotency_key": "k1"}
        )
        assert refused.status_code == 422 and "zz00000-ovh n’est pas un compte client connu." in refused.text
        api = await web.post(
            f"/v1/services/{SHOP}/contact-changes", json={"tech": "zz00000-ovh"}, headers={"Authorization": f"Bearer {mint_token(SECRET, OLD_TECH)}"}
        )
        assert api.status_code == 422 and api.json()["detail"] == "zz00000-ovh is not a known customer account."
        assert "content-language" not in api.headers


async def test_a_request_page_in_french_with_its_dates_and_states(shop: asyncpg.Pool) -> None:
    async with browser(shop, WEBMASTER) as web:
        owner = {"Authorization": f"Bearer {mint_token(SECRET, OWNER)}"}
        submitted = await web.post(f"/v1/services/{SHOP}/contact-changes", json={"tech": WEBMASTER}, headers=owner)
        request_id = submitted.json()["items"][0]["id"]
        page = await web.get(f"/requests/{request_id}")
        assert language_of(page) == "fr"
        assert f"<h1>Contact technique de {SHOP}</h1>" in page.text
        assert "En cours de vérification" in page.text  # the state, as the page says it
        assert re.search(r"\d{1,2} [a-zéû]+\.? 20\d\d, \d\d:\d\d UTC", page.text), "a date written the French way"

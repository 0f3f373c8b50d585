"""Finding things (issue 20), through the app in process on a real PostgreSQL schema of its own:
"my contacts" paged by service id and filtered (role, type, text in the id), in one statement
that reads no more than a page whatever the account's size; "my requests" of one service; the
download of a person's history in JSON and CSV, streamed a page at a time; and the pages."""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from contacts_requests import exports, schema, views
from contacts_requests.api import create_api
from contacts_shared.auth import mint_token
from contacts_tools.testing import explain, schema_pool

SECRET = "s" * 32
ME, OTHER, STRANGER = "aa11111-ovh", "bb22222-ovh", "zz99999-ovh"
TTL = timedelta(days=14)
# Ids a LIKE pattern would misread, cases and characters beyond ASCII: the text search takes them literally.
ODD = ["100%-uptime.example", "under_score.example", "underXscore.example", "back\\slash.example", "Ünïcode-Shop.example"]


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("requests", schema.MIGRATIONS) as pool:
        yield pool


async def add_services(pool: asyncpg.Pool, count: int, *, prefix: str = "site", admin: str = ME, tech: str = OTHER) -> list[str]:
    """`count` services of `admin` (tech `tech`, billing `admin` on every third), half web hosting, half domains."""
    rows = [
        (f"{prefix}-{n:05d}.example", "web-hosting" if n % 2 else "domain", admin, tech, admin if n % 3 == 0 else tech)
        for n in range(count)
    ]
    await pool.executemany("INSERT INTO service_rows (service, type, admin, tech, billing) VALUES ($1, $2, $3, $4, $5)", rows)
    return [r[0] for r in rows]


@contextlib.asynccontextmanager
async def api(pool: asyncpg.Pool, nic: str | None = ME, *, cookie: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    app = create_api(pool=pool, jwt_secret=SECRET, request_ttl=TTL, dev_login=True)
    token = mint_token(SECRET, nic) if nic else None
    headers = {"Authorization": f"Bearer {token}"} if token and not cookie else {}
    cookies = {"contacts_session": token} if token and cookie else {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://contacts.test", headers=headers, cookies=cookies
    ) as client:
        yield client


async def all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        response = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        if not (cursor := response.json()["next_cursor"]):
            return pages


async def test_my_contacts_page_through_every_service_once_and_filter(pool: asyncpg.Pool) -> None:
    created = await add_services(pool, 520) + await add_services(pool, 30, prefix="theirs", admin=OTHER, tech=STRANGER)
    await pool.executemany(
        "INSERT INTO service_rows (service, type, admin, tech, billing) VALUES ($1, 'odd', $2, $2, $2)", [(s, ME) for s in ODD]
    )
    in_order = [r["service"] for r in await pool.fetch("SELECT service FROM services ORDER BY service")]
    mine = [s for s in in_order if not s.startswith("theirs")]
    async with api(pool) as client:
        pages = await all_pages(client, "/v1/me/contacts", limit=200)
        assert [len(p) for p in pages] == [200, 200, 125]
        assert [s["service"] for p in pages for s in p] == mine  # each once, in the database's order of ids
        assert (await client.get("/v1/me/contacts")).json()["items"] == pages[0][:50]  # 50 by default

        def services(pages: list[list[dict[str, Any]]]) -> list[str]:
            return [s["service"] for p in pages for s in p]

        billing = services(await all_pages(client, "/v1/me/contacts", role="billing", limit=37))
        assert billing == [s for s in mine if s in ODD or s.startswith("site") and int(s[5:10]) % 3 == 0]
        assert services(await all_pages(client, "/v1/me/contacts", role="tech")) == [s for s in in_order if s in ODD]
        hosting = await all_pages(client, "/v1/me/contacts", type="web-hosting", role="admin", limit=100)
        assert services(hosting) == [s for s in created[:520] if int(s[5:10]) % 2] and len(hosting) == 3
        assert {tuple(s["roles"]) for p in hosting for s in p} == {("admin",), ("admin", "billing")}
        assert services(await all_pages(client, "/v1/me/contacts", q="SITE-0012")) == [f"site-0012{n}.example" for n in range(10)]
        assert services(await all_pages(client, "/v1/me/contacts", q="%")) == ["100%-uptime.example"]
        assert services(await all_pages(client, "/v1/me/contacts", q="_")) == ["under_score.example"]
        assert services(await all_pages(client, "/v1/me/contacts", q="\\")) == ["back\\slash.example"]
        assert services(await all_pages(client, "/v1/me/contacts", q="ünïcode")) == ["Ünïcode-Shop.example"]
        assert services(await all_pages(client, "/v1/me/contacts", q="theirs")) == []  # others' services never show
        assert services(await all_pages(client, "/v1/me/contacts", type="web")) == []  # the type is exact

        # A cursor is opaque and ours: anything else is refused, naming it.
        other_kinds = ("service|", f"2026-01-01T00:00:00+00:00|{uuid.uuid4()}", "service|\x00", "service|a\nb")
        for cursor in ("not one of ours", *(base64.urlsafe_b64encode(c.encode()).decode() for c in other_kinds)):
            refused = await client.get("/v1/me/contacts", params={"cursor": cursor})
            assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "cursor", cursor
        for params in ({"limit": 0}, {"limit": 201}, {"role": "requester"}, {"q": "a\x00b"}, {"type": "x" * 65}):
            assert (await client.get("/v1/me/contacts", params=params)).status_code == 422, params
    async with api(pool, "yy88888-ovh") as client:  # a contact of nothing
        assert (await client.get("/v1/me/contacts")).json() == {"items": [], "next_cursor": None}


async def test_a_page_of_my_contacts_reads_a_page_not_the_account(pool: asyncpg.Pool) -> None:
    await add_services(pool, 6000)
    await add_services(pool, 6000, prefix="crowd", admin=OTHER, tech=STRANGER)
    await pool.execute("ANALYZE service_rows")
    statements: list[tuple[str, tuple[Any, ...]]] = []

    class Recorder:
        async def fetch(self, sql: str, *args: Any) -> list:
            statements.append((sql, args))
            return []

    await views.my_contacts(Recorder(), ME, limit=51)  # type: ignore[arg-type]
    await views.my_contacts(Recorder(), ME, after="site-05000.example", limit=51)  # type: ignore[arg-type]
    await views.my_contacts(Recorder(), ME, role="billing", type_="domain", text="-05", after="site-04000.example", limit=51)  # type: ignore[arg-type]
    first, deep, filtered = [await explain(pool, sql, *args) for sql, args in statements]
    for plan in (first, deep, filtered):
        assert "Seq Scan" not in json.dumps(plan), plan
        assert "service_rows_" in json.dumps(plan), plan  # the (role, service) indexes
    blocks = [p["Shared Hit Blocks"] + p["Shared Read Blocks"] for p in (first, deep)]
    assert blocks[1] <= blocks[0] * 2 + 10 and blocks[1] < 200, blocks  # deep in the list costs what the first page does


async def test_my_requests_of_one_service_keep_the_other_filters_and_paging(pool: asyncpg.Pool) -> None:
    shop, blog = "shop.example", "blog.example"
    rows = [
        (uuid.uuid4(), service, ME if n % 4 else OTHER, OTHER if n % 4 else ME, "cancelled" if n % 2 else "done", n)
        for n in range(60)
        for service in (shop, blog)
    ]
    await pool.executemany(
        "INSERT INTO contact_changes (id, service, type, from_nic, to_nic, requester, state, created_at, expires_at)"
        " VALUES ($1, $2, 'tech', $3, $4, $3, $5, now() - make_interval(mins => $6), now())",
        rows,
    )
    newest_first = [r for r in rows if r[1] == shop]  # n grows with age
    async with api(pool) as client:
        pages = await all_pages(client, "/v1/me/contact-changes", service=shop, limit=25)
        assert [len(p) for p in pages] == [25, 25, 10]
        assert [i["id"] for p in pages for i in p] == [str(r[0]) for r in newest_first]
        done = await all_pages(client, "/v1/me/contact-changes", service=shop, state="done", role="to")
        assert [i["id"] for p in done for i in p] == [str(r[0]) for r in newest_first if r[4] == "done" and r[3] == ME]
        assert await all_pages(client, "/v1/me/contact-changes", service="shop.example ") == [[]]  # exact
    async with api(pool, STRANGER) as client:
        assert await all_pages(client, "/v1/me/contact-changes", service=shop) == [[]]


async def add_history(pool: asyncpg.Pool, count: int) -> list[uuid.UUID]:
    """`count` ended requests of ME's, each with two lines of history, the newest first."""
    ids = [uuid.uuid4() for _ in range(count)]
    await pool.executemany(
        "INSERT INTO contact_changes (id, service, type, from_nic, to_nic, requester, state, created_at, expires_at)"
        " VALUES ($1, $2, 'tech', $3, $4, $3, 'cancelled', now() - make_interval(secs => $5), now())",
        [(rid, f"site-{n}.example", ME, OTHER, n) for n, rid in enumerate(ids)],
    )
    await pool.executemany(
        "INSERT INTO history (request_id, at, state, actor, reason) VALUES ($1, now(), 'checking', $2, NULL),"
        " ($1, now(), 'cancelled', $2, $3)",
        [(rid, ME, "=HYPERLINK(\"http://evil.example\"), said I, \"quoted\"") for rid in ids],
    )
    return ids


async def test_my_history_downloads_every_request_with_its_history_in_json_and_csv(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports, "EXPORT_PAGE", 40)  # 450 requests: a dozen pages of the keyset query
    ids = await add_history(pool, 450)
    async with api(pool, cookie=True) as client:  # the session cookie, as from the page's link
        response = await client.get("/v1/me/contact-changes/export")
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.headers["content-disposition"] == f'attachment; filename="contact-requests-{ME}.json"'
        assert response.headers["cache-control"] == "no-store"
        items = response.json()["items"]
        assert [i["id"] for i in items] == [str(i) for i in ids]  # newest first, each once
        single = (await client.get(f"/v1/contact-changes/{ids[7]}")).json()
        assert items[7] == single  # the same view as the request's own

        response = await client.get("/v1/me/contact-changes/export", params={"format": "csv"})
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["content-disposition"] == f'attachment; filename="contact-requests-{ME}.csv"'
        rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["request_id", "service", "type", "from", "to", "requester", "request_state", "at", "state", "actor", "reason"]
    assert len(rows) == 1 + 2 * 450
    assert [r[0] for r in rows[1::2]] == [str(i) for i in ids]
    first, second = rows[1:3]
    assert first[:7] == [str(ids[0]), "site-0.example", "tech", ME, OTHER, ME, "cancelled"]
    assert (first[8], first[9], first[10]) == ("checking", ME, "")
    assert second[8] == "cancelled"
    assert second[10] == "'=HYPERLINK(\"http://evil.example\"), said I, \"quoted\""  # never a formula
    assert first[7] == items[0]["history"][0]["at"]  # the same moment, written the same way

    async with api(pool, STRANGER) as client:
        assert (await client.get("/v1/me/contact-changes/export")).json() == {"items": []}
        assert (await client.get("/v1/me/contact-changes/export", params={"format": "csv"})).text.count("\r\n") == 1
    async with api(pool, None) as client:
        assert (await client.get("/v1/me/contact-changes/export")).status_code == 401


# --- the pages ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def browsing(pool: asyncpg.Pool, nic: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in as `nic` through the development sign-in (its cookies kept)."""
    app = create_api(pool=pool, jwt_secret=SECRET, request_ttl=TTL, dev_login=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://contacts.test", follow_redirects=True) as web:
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', (await web.get("/signin")).text)
        assert csrf
        assert (await web.post("/signin", data={"csrf": csrf.group(1), "nic": nic}, follow_redirects=False)).status_code == 303
        yield web


def shown(page: str) -> list[str]:
    return [html.unescape(s) for s in re.findall(r'<tr data-service="([^"]+)">', page)]


def next_page(page: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" data-testid="next-page">', page)
    return html.unescape(found.group(1)) if found else None


async def test_my_contacts_page_filters_and_pages_keeping_the_filters(pool: asyncpg.Pool) -> None:
    await add_services(pool, 130)
    async with browsing(pool, ME) as web:
        first = (await web.get("/contacts")).text
        assert len(shown(first)) == 50 and 'data-testid="first-page"' not in first
        assert '<option value="domain">domain</option>' in first and '<option value="web-hosting">web-hosting</option>' in first
        seen, link = shown(first), next_page(first)
        while link:
            page = (await web.get(link)).text
            assert 'data-testid="first-page"' in page
            seen, link = seen + shown(page), next_page(page)
        assert seen == [f"site-{n:05d}.example" for n in range(130)]

        query = {"role": "billing", "type": "web-hosting", "q": " SITE-0000 "}  # trimmed, any case
        page = (await web.get("/contacts", params=query)).text
        assert shown(page) == [f"site-{n:05d}.example" for n in (3, 9)]
        assert '<option value="billing" selected>' in page and '<option value="web-hosting" selected>' in page
        assert 'value="SITE-0000"' in page and 'data-testid="filter-clear"' in page and next_page(page) is None

        query = {"type": "domain", "q": "site"}
        link, seen = f"/contacts?{httpx.QueryParams(query)}", []
        while link:
            page = (await web.get(link)).text
            seen, link = seen + shown(page), next_page(page)
            assert link is None or ("type=domain" in link and "q=site" in link)
        assert seen == [f"site-{n:05d}.example" for n in range(0, 130, 2)]

        # An unknown role and a mangled cursor are ignored: the first page of what the text finds.
        none = await web.get("/contacts", params={"q": "nothing-like-it", "role": "owner", "cursor": "mangled"})
        assert none.status_code == 200 and "No service of yours matches these filters." in none.text
        role_select = re.search(r'<select id="filter-role".*?</select>', none.text, re.DOTALL)
        assert role_select and "selected" not in role_select.group(0)
        assert shown((await web.get("/contacts", params={"role": "owner", "cursor": "mangled"})).text)[0] == "site-00000.example"


async def test_my_requests_page_filters_by_service_and_links_the_downloads(pool: asyncpg.Pool) -> None:
    ids = await add_history(pool, 3)
    async with browsing(pool, ME) as web:
        page = (await web.get("/requests", params={"service": " site-1.example "})).text
        assert re.findall(r'data-request="([^"]+)"', page) == [str(ids[1])]
        assert 'data-testid="filter-service"' in page and 'value="site-1.example"' in page
        assert 'href="/v1/me/contact-changes/export?format=csv"' in page and 'href="/v1/me/contact-changes/export?format=json"' in page
        assert "No request for this service." in (await web.get("/requests", params={"service": "elsewhere"})).text
        download = await web.get("/v1/me/contact-changes/export?format=csv")  # the link works with the session alone
        assert download.status_code == 200 and download.text.count("\r\n") == 1 + 2 * 3

"""The API with its database gone: a 503 that says the work may have been recorded (a COMMIT
whose connection is cut may have happened), with Retry-After, as the API document says, and
answers again once the database is back. A PostgreSQL server of the test's own is stopped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from contacts_requests import schema
from contacts_requests.api import create_api
from contacts_shared.auth import mint_token
from contacts_shared.db import create_pool, migrate
from own_nodes import OwnPostgres, chown, postgres_bin_dir, started_in_a_new_directory
from support import free_port

SECRET = "s" * 32
OWNER = "aa11111-ovh"


def own_postgres(root: Path) -> OwnPostgres:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail("this test needs PostgreSQL's server binaries: apt-get install postgresql")
    chown(root, "postgres")
    return OwnPostgres(root, free_port(), bin_dir)


@pytest.fixture
def server() -> Iterator[OwnPostgres]:
    with started_in_a_new_directory("contacts-outage-", own_postgres) as started:
        yield started


async def test_with_the_database_away_the_api_says_503_and_that_it_may_have_been_recorded(server: OwnPostgres) -> None:
    await migrate(server.url, "requests", schema.MIGRATIONS)
    pool = await create_pool(server.url, "requests")
    app = create_api(pool=pool, jwt_secret=SECRET, request_ttl=timedelta(days=14))
    headers = {"Authorization": f"Bearer {mint_token(SECRET, OWNER)}"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://contacts.test", headers=headers) as client:
            assert (await client.get("/v1/me/contacts")).status_code == 200
            server.stop()
            calls = (
                ("GET", "/v1/me/contacts", "/v1/me/contacts", None),
                # Streamed, but its first page is read before the answer starts.
                ("GET", "/v1/me/contact-changes/export", "/v1/me/contact-changes/export", None),
                ("POST", "/v1/services/a.example/contact-changes", "/v1/services/{service}/contact-changes", {"tech": "bb22222-ovh"}),
            )
            for method, path, documented, body in calls:
                response = await client.request(method, path, json=body)
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.headers["Retry-After"] == "2"
                assert "may have been recorded" in response.json()["detail"]
                assert "503" in app.openapi()["paths"][documented][method.lower()]["responses"]
            server.serve()
            assert (await client.get("/v1/me/contacts")).status_code == 200
    finally:
        await pool.close()

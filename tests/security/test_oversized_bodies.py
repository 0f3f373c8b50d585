"""Request bodies over 64 KiB get 413 problem details before authentication and without being
read whole, on the API and on the pages; a body just under the limit is handled as usual."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
from security.table import tried
from seed import HOSTING, OWNER, WEBMASTER
from support import System

LIMIT = 64 * 1024
SUBMIT = f"/v1/services/{quote(HOSTING, safe='')}/contact-changes"
ROUTES = {"the API's submission": SUBMIT, "the pages' sign-in": "/signin", "the pages' modify form": "/contacts/modify"}


async def requests_in(world: System) -> int:
    return (await world.sql("requests", "SELECT count(*) AS n FROM contact_changes"))[0]["n"]


@pytest.mark.parametrize("route", list(ROUTES))
async def test_a_declared_oversized_body_is_refused_before_authentication(world: System, route: str) -> None:
    before = await requests_in(world)
    async with world.api() as anonymous:  # no token: authentication would answer 401
        response = await anonymous.post(ROUTES[route], content=b"x" * (LIMIT + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413 and str(LIMIT) in response.json()["detail"]
    assert await requests_in(world) == before
    tried(f"oversized body ({LIMIT + 1} bytes, Content-Length) to {route}, no token", "413 problem details, before authentication")


async def test_a_chunked_body_is_cut_off_at_the_limit(world: System) -> None:
    """Without Content-Length the body is read only up to the limit: after twice the limit of a
    body that never ends (no last chunk), the answer is already there."""
    host, port = world.api_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    before = await requests_in(world)
    try:
        writer.write(
            f"POST {SUBMIT} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {world.jwt(OWNER)}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(2):
            writer.write(f"{LIMIT:x}\r\n".encode() + b"x" * LIMIT + b"\r\n")
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert await requests_in(world) == before
    tried("chunked body that never ends, to the API's submission", f"413 once {LIMIT} bytes are passed, the rest unread")


async def test_a_body_within_the_limit_is_handled(world: System) -> None:
    padding = " " * (LIMIT - 100)
    async with world.api(OWNER) as owner:
        response = await owner.post(SUBMIT, content=f'{{"tech": "{WEBMASTER}"}}{padding}', headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text

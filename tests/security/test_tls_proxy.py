"""Behind a TLS proxy (CONTACTS_FORWARDED_ALLOW_IPS names it), what the browser reaches over
HTTPS gets `Secure` cookies and HSTS; without the setting nobody can claim HTTPS with a header.
An idle connection outlives the proxy's and clients' keep-alive, so that it is never closed by
the server just as they reuse it."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest
from security.table import tried
from support import System, running_system

FROM_PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


@pytest.fixture(scope="module")
def world_settings() -> dict[str, str]:
    return {"CONTACTS_FORWARDED_ALLOW_IPS": "127.0.0.1"}


async def signin_page(api_url: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api_url, timeout=15) as browser:
        response = await browser.get("/signin", headers=headers)
    assert response.status_code == 200
    return response


async def test_through_the_proxy_cookies_are_secure_and_hsts_is_sent(world: System) -> None:
    response = await signin_page(world.api_url, FROM_PROXY)
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")
    cookies = response.headers.get_list("set-cookie")
    assert cookies and all("Secure" in c for c in cookies), cookies
    plain = await signin_page(world.api_url, {})
    assert "strict-transport-security" not in plain.headers
    assert not any("Secure" in c for c in plain.headers.get_list("set-cookie"))


async def test_without_the_setting_the_header_is_not_believed(infrastructure: tuple[str, str]) -> None:
    async with running_system(*infrastructure, "security-no-proxy") as system:
        response = await signin_page(system.api_url, FROM_PROXY)
    assert "strict-transport-security" not in response.headers
    assert not any("Secure" in c for c in response.headers.get_list("set-cookie"))
    tried("X-Forwarded-Proto: https from a client that is not the configured proxy", "ignored: no HSTS, cookies as for http")


async def test_an_idle_connection_is_kept_longer_than_a_client_keeps_it(world: System) -> None:
    """httpx keeps an idle connection 5 s, and so did the server: a request sent as the server
    closed it got no answer (seen once in the fault suite as a ReadError)."""
    address = urlsplit(world.api_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)

    async def health() -> bytes:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {address.netloc}\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=5)
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        return status

    try:
        assert (await health()).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(6)  # the idle time under test, longer than httpx's 5 s
        assert (await health()).startswith(b"HTTP/1.1 200"), "the server closed the idle connection"
    finally:
        writer.close()

"""Browser tests: Debian's Chromium, driven by Playwright, against the three services running
as real processes (with the development sign-in) and a real SMTP sink.

One browser for the whole session; each person of a story gets their own browser context
(own cookies), as if they sat at their own computer.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from browser.helpers import Person, sign_in
from playwright.async_api import Browser, Page, async_playwright, expect
from seed import feed_world
from support import System

CHROMIUM = os.environ.get("CONTACTS_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1200, "height": 860}

# Pages answer in milliseconds, but the machine may be busy: waits are on conditions, generous.
expect.set_options(timeout=20_000)


@pytest.fixture
def system_settings() -> dict[str, str]:
    return {"CONTACTS_DEV_LOGIN": "1"}


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium; scripts/test does it as root)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        await launched.close()


@pytest.fixture
async def world(system: System) -> System:
    return await feed_world(system)


@pytest.fixture
async def person(browser: Browser, world: System) -> AsyncIterator[Person]:
    """`await person(nic)`: a new browser (context) signed in as `nic` on My contacts;
    `await person()` is one nobody has signed in with yet; `locale`: the browser's language (its
    Accept-Language), British English unless said."""
    contexts = []

    async def open_browser(nic: str | None = None, *, viewport: dict[str, int] = DESKTOP, locale: str = "en-GB") -> Page:
        context = await browser.new_context(base_url=world.api_url, viewport=viewport, locale=locale)
        contexts.append(context)
        page = await context.new_page()
        if nic:
            await page.goto("/signin")
            await sign_in(page, nic)
            await expect(page.get_by_role("heading", level=1)).to_have_text("My contacts")
        return page

    yield open_browser
    for context in contexts:
        await context.close()

"""What the browser tests do again and again: sign in, follow a mailed link, take pictures."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Awaitable, Callable

from playwright.async_api import Page, expect
from support import ROOT, Mail, System

DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
# `await person(nic)` opens a browser signed in as `nic` (see the `person` fixture).
Person = Callable[..., Awaitable[Page]]
LINK = re.compile(r"https?://\S+/requests/[0-9a-f-]{36}\?token=\S+")


async def sign_in(page: Page, nic: str) -> None:
    await page.get_by_label("NIC handle").fill(nic)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("me")).to_have_text(nic)


def link_in(mail: Mail) -> str:
    match = LINK.search(mail.body)
    assert match, f"no confirm link in: {mail.body}"
    return match.group(0)


async def screenshot(page: Page, system: System, name: str, *, docs: bool = False) -> None:
    """Save the page as a test artifact; with `docs`, also as the README's picture of it
    when CONTACTS_UPDATE_SCREENSHOTS=1 (or when the picture is missing)."""
    path = system.log_dir / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    if docs:
        target = DOCS_SCREENSHOTS / f"{name}.png"
        if os.environ.get("CONTACTS_UPDATE_SCREENSHOTS") == "1" or not target.exists():
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def request_id_of(page: Page) -> str:
    match = re.search(r"/requests/([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match.group(1)


async def go_to(page: Page, name: str) -> None:
    """Follow a link of the main navigation (My contacts, My requests)."""
    await page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(name)


async def assert_accessible_basics(page: Page) -> None:
    """What a screen reader user needs first: a language, one h1, a main landmark, and a
    name for every control (label, or aria-label for links and buttons)."""
    problems = await page.evaluate(
        """() => {
          const problems = [];
          if (!document.documentElement.lang) problems.push('no lang on <html>');
          if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
          if (!document.querySelector('main')) problems.push('no <main>');
          if (!document.querySelector('meta[name=viewport]')) problems.push('no viewport meta');
          for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
            if (!el.labels || el.labels.length === 0) problems.push('unlabelled ' + (el.name || el.id));
          }
          for (const el of document.querySelectorAll('a, button')) {
            if (!(el.getAttribute('aria-label') || el.textContent).trim()) problems.push('unnamed ' + el.outerHTML);
          }
          return problems;
        }"""
    )
    assert problems == [], f"{page.url}: {problems}"

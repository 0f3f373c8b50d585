"""Finding things in the browser (issue 20): an owner with many services filters My contacts by
role, type and text, pages through them with the filters kept, narrows My requests to one
service and downloads the history of their requests (CSV and JSON) from its link."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from browser.helpers import Person, assert_accessible_basics, go_to, screenshot
from contacts_shared.contracts import ServiceUpserted
from playwright.async_api import Locator, Page, expect
from seed import BILLER, HOSTING, OLD_TECH, OWNER, WEBMASTER
from support import System, eventually

pytestmark = pytest.mark.e2e

COUNT = 120  # with the seed's hosting plan, three pages of 50


def service_of(n: int) -> str:
    return f"client{n:03d}.{'shop' if n % 2 else 'blog'}.example"


async def many_services(world: System) -> list[str]:
    services = [service_of(n) for n in range(COUNT)]
    await world.publish(
        *(
            ServiceUpserted(
                service=s, type="domain" if n % 4 == 0 else "web-hosting", admin=OWNER, tech=OWNER if n % 5 == 0 else OLD_TECH, billing=BILLER
            )
            for n, s in enumerate(services)
        )
    )

    async def all_in() -> bool:
        return (await world.sql("requests", "SELECT count(*) AS n FROM services WHERE admin = $1", OWNER))[0]["n"] == COUNT + 1

    await eventually(all_in, timeout=60, what="the services in the requests service's replica")
    return services


def rows(page: Page) -> Locator:
    return page.locator("tr[data-service]")


async def shown(page: Page) -> list[str]:
    return await rows(page).evaluate_all("rows => rows.map(r => r.dataset.service)")


async def test_my_contacts_filters_and_pages_and_my_history_downloads(world: System, person: Person) -> None:
    services = await many_services(world)
    owner = await person(OWNER)

    # Every service, 50 a page, in the order of their ids; the last page has no Next page.
    await expect(rows(owner)).to_have_count(50)
    seen = await shown(owner)
    await expect(owner.get_by_test_id("first-page")).to_have_count(0)
    for expected in (50, 21):
        await owner.get_by_test_id("next-page").click()
        await expect(rows(owner)).to_have_count(expected)
        await expect(owner.get_by_test_id("first-page")).to_be_visible()
        seen += await shown(owner)
    await expect(owner.get_by_test_id("next-page")).to_have_count(0)
    assert seen == [*services, HOSTING]  # "client…" sorts before "shop-example…"

    # Technical contact, domains, "BLOG" in the id (any case): every 20th service.
    await owner.get_by_label("Role").select_option(label="Technical")
    await owner.get_by_label("Type").select_option("domain")
    await owner.get_by_label("Service contains").fill("BLOG")
    await owner.get_by_test_id("filter-apply").click()
    await expect(rows(owner)).to_have_count(COUNT // 20)
    assert await shown(owner) == [service_of(n) for n in range(0, COUNT, 20)]
    assert re.search(r"role=tech&type=domain&q=BLOG$", owner.url), owner.url
    await expect(owner.get_by_label("Role")).to_have_value("tech")
    await expect(owner.get_by_label("Service contains")).to_have_value("BLOG")
    await expect(owner.get_by_test_id("next-page")).to_have_count(0)
    await screenshot(owner, world, "my-contacts-filtered", docs=True)
    await assert_accessible_basics(owner)

    # A filter with more than a page keeps itself on the next one.
    await owner.get_by_test_id("filter-clear").click()
    await expect(rows(owner)).to_have_count(50)
    await owner.get_by_label("Type").select_option("web-hosting")
    await owner.get_by_test_id("filter-apply").click()
    await expect(rows(owner)).to_have_count(50)
    await owner.get_by_test_id("next-page").click()
    web_hosting = [s for n, s in enumerate(services) if n % 4]
    await expect(rows(owner)).to_have_count(len(web_hosting) - 50)
    assert await shown(owner) == web_hosting[50:]
    await expect(owner.get_by_label("Type")).to_have_value("web-hosting")

    # My requests of one service, then the whole history downloaded.
    asked = {s: await world.submit_one(OWNER, s, {"tech": WEBMASTER}) for s in services[1:3]}
    for request_id in asked.values():
        await world.wait_state(OWNER, request_id, "validating")
    await go_to(owner, "My requests")
    await expect(owner.locator("li[data-request]")).to_have_count(2)
    await owner.get_by_label("Service").fill(services[2])
    await owner.get_by_role("button", name="Filter").click()
    await expect(owner.locator("li[data-request]")).to_have_count(1)
    await expect(owner.locator(f'li[data-request="{asked[services[2]]}"]')).to_be_visible()
    await expect(owner.get_by_label("Service")).to_have_value(services[2])
    await screenshot(owner, world, "my-requests-of-a-service")
    await assert_accessible_basics(owner)

    async with owner.expect_download() as csv_download:
        await owner.get_by_test_id("export-csv").click()
    download = await csv_download.value
    assert download.suggested_filename == f"contact-requests-{OWNER}.csv"
    lines = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text())))
    assert {line["request_id"] for line in lines} == set(asked.values())
    assert {(line["service"], line["to"], line["request_state"]) for line in lines} == {(s, WEBMASTER, "validating") for s in asked}

    async with owner.expect_download() as json_download:
        await owner.get_by_test_id("export-json").click()
    download = await json_download.value
    assert download.suggested_filename == f"contact-requests-{OWNER}.json"
    items = json.loads(Path(await download.path()).read_text())["items"]
    assert [i["id"] for i in items] == [asked[services[2]], asked[services[1]]]  # newest first
    assert sum(len(i["history"]) for i in items) == len(lines)

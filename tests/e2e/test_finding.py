"""Finding things with thousands of services (issue 20), against the services as processes: an
account is a contact of 2,000 services, fed as other systems feed them (`service.upserted` on the
exchange); "my contacts" pages through every one exactly once and filters them; "my requests" of
one service; the person downloads their history through the real server (streamed)."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
from contacts_shared.contracts import ServiceUpserted
from seed import BILLER, HOSTING, OLD_TECH, OWNER, STRANGER, WEBMASTER
from support import System, eventually

pytestmark = pytest.mark.e2e

COUNT = 2000


def service_of(n: int) -> str:
    return f"client{n:04d}.{'shop' if n % 2 else 'blog'}.example"


async def pages_of(world: System, nic: str, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    async with world.api(nic) as client:
        while True:
            response = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
            assert response.status_code == 200, response.text
            pages.append(response.json()["items"])
            if not (cursor := response.json()["next_cursor"]):
                return pages


def ids(pages: list[list[dict[str, Any]]], key: str = "service") -> list[str]:
    """The services of pages of my contacts (`key="id"`: the requests of pages of my requests)."""
    return [item[key] for page in pages for item in page]


async def test_an_account_with_2000_services_pages_through_each_once_and_filters(world: System) -> None:
    services = [service_of(n) for n in range(COUNT)]
    started = time.monotonic()
    await world.publish(
        *(
            ServiceUpserted(
                service=service,
                type="domain" if n % 4 == 0 else "web-hosting",
                admin=OWNER,
                tech=OWNER if n % 5 == 0 else OLD_TECH,
                billing=BILLER,
            )
            for n, service in enumerate(services)
        )
    )

    async def all_in() -> bool:
        rows = await world.sql("requests", "SELECT count(*) AS n FROM services WHERE admin = $1", OWNER)
        return rows[0]["n"] == COUNT + 1  # and the seed's hosting plan

    await eventually(all_in, timeout=120, interval=0.2, what=f"{COUNT} services in the requests service's replica")
    print(f"\n{COUNT} services published and replicated in {time.monotonic() - started:.1f}s")

    # Every service once, in pages of the largest size and of the default one, the same order.
    largest = await pages_of(world, OWNER, "/v1/me/contacts", limit=200)
    assert [len(p) for p in largest] == [200] * 10 + [1]
    seen = ids(largest)
    assert len(seen) == len(set(seen)) == COUNT + 1 and set(seen) == {*services, HOSTING}
    started = time.monotonic()
    default = await pages_of(world, OWNER, "/v1/me/contacts")
    print(f"{len(default)} pages of 50 in {time.monotonic() - started:.2f}s")
    assert len(default) == 41 and ids(default) == seen
    assert set(ids(await pages_of(world, BILLER, "/v1/me/contacts", role="billing"))) == {*services, HOSTING}

    # Filters, alone and together, with their paging.
    tech = await pages_of(world, OWNER, "/v1/me/contacts", role="tech", limit=150)
    assert ids(tech) == [s for s in seen if s in {service_of(n) for n in range(0, COUNT, 5)}]
    assert all(item["roles"] == ["admin", "tech"] for page in tech for item in page)
    domains = ids(await pages_of(world, OWNER, "/v1/me/contacts", type="domain"))
    assert set(domains) == {service_of(n) for n in range(0, COUNT, 4)}
    assert set(ids(await pages_of(world, OWNER, "/v1/me/contacts", q="SHOP."))) == set(services[1::2])
    assert set(ids(await pages_of(world, OWNER, "/v1/me/contacts", q="client19"))) == set(services[1900:])
    together = ids(await pages_of(world, OWNER, "/v1/me/contacts", role="tech", type="domain", q="blog", limit=7))
    assert set(together) == {service_of(n) for n in range(0, COUNT, 20)}
    assert ids(await pages_of(world, OLD_TECH, "/v1/me/contacts", role="admin")) == []
    assert ids(await pages_of(world, STRANGER, "/v1/me/contacts")) == []

    # My requests of one service, among others; then the history of them all, downloaded.
    asked = {service: await world.submit_one(OWNER, service, {"tech": WEBMASTER}) for service in services[1:4]}
    of_one = await pages_of(world, OWNER, "/v1/me/contact-changes", service=services[2])
    assert ids(of_one, "id") == [asked[services[2]]]
    assert ids(await pages_of(world, WEBMASTER, "/v1/me/contact-changes", service=services[2], role="to"), "id") == [asked[services[2]]]
    for request_id in asked.values():  # their history still until someone answers
        await world.wait_state(OWNER, request_id, "validating")
    async with world.api(OWNER) as client:
        exported = await client.get("/v1/me/contact-changes/export")
        assert exported.headers["content-disposition"] == f'attachment; filename="contact-requests-{OWNER}.json"'
        assert [i["id"] for i in exported.json()["items"]] == [asked[s] for s in reversed(services[1:4])]  # newest first
        as_csv = await client.get("/v1/me/contact-changes/export", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    history = [(line["state"], line["actor"]) for item in exported.json()["items"] for line in item["history"]]
    assert [(r["state"], r["actor"]) for r in rows] == history  # one row per line of history, in the same order
    assert {r["request_id"] for r in rows} == set(asked.values()) and {r["to"] for r in rows} == {WEBMASTER}

"""Behaviours of the HTTP API that the spec names and no other test covered: the
`Idempotency-Key` header, the paging and the `role` filter of `GET /v1/me/contact-changes`, and
that a validation code exists nowhere but in its email (no message, no table, no log)."""

from __future__ import annotations

from typing import Any

import pytest
from contacts_shared.contracts import ServiceUpserted
from seed import BILLER, OLD_TECH, OWNER, WEBMASTER, email_of
from support import SCHEMAS, System, eventually

pytestmark = pytest.mark.e2e


async def test_the_same_idempotency_key_gives_the_same_request(world: System) -> None:
    first = await world.submit(OWNER, "shop-example.web-hosting", {"tech": WEBMASTER}, **{"Idempotency-Key": "k-1"})
    again = await world.submit(OWNER, "shop-example.web-hosting", {"tech": WEBMASTER}, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202, again.text
    assert [i["id"] for i in again.json()["items"]] == [i["id"] for i in first.json()["items"]]
    # Without the key, the same body is a second submission: refused, one is open.
    other = await world.submit(OWNER, "shop-example.web-hosting", {"tech": WEBMASTER})
    assert other.status_code == 409
    assert len(await world.sql("requests", "SELECT 1 FROM contact_changes")) == 1


async def _services_with_requests(world: System, count: int) -> list[str]:
    services = [f"site-{n}.example" for n in range(count)]
    await world.publish(
        *(ServiceUpserted(service=s, type="hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER) for s in services)
    )
    await eventually(lambda: world.contacts_of(OWNER, services[-1]), what="the services")
    return [await world.submit_one(OWNER, service, {"tech": WEBMASTER}) for service in services]


async def _pages(world: System, nic: str, **query: Any) -> list[list[str]]:
    pages, cursor = [], None
    async with world.api(nic) as client:
        while True:
            params = {**query, **({"cursor": cursor} if cursor else {})}
            response = await client.get("/v1/me/contact-changes", params=params)
            assert response.status_code == 200, response.text
            pages.append([item["id"] for item in response.json()["items"]])
            if not (cursor := response.json()["next_cursor"]):
                return pages


async def test_my_requests_page_newest_first_and_filter_by_role(world: System) -> None:
    created = await _services_with_requests(world, 5)
    pages = await _pages(world, OWNER, limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == list(reversed(created))  # newest first, each once

    def everything(pages: list[list[str]]) -> set[str]:
        return {i for p in pages for i in p}

    assert everything(await _pages(world, OWNER, role="requester")) == set(created)
    assert everything(await _pages(world, OWNER, role="to")) == set()
    assert everything(await _pages(world, WEBMASTER, role="to")) == set(created)
    assert everything(await _pages(world, OLD_TECH, role="from", limit=3)) == set(created)
    assert everything(await _pages(world, OLD_TECH, role="requester")) == set()
    async with world.api(OWNER) as client:
        bad = await client.get("/v1/me/contact-changes", params={"role": "admin"})
    assert bad.status_code == 422


async def test_a_validation_code_is_nowhere_but_in_its_email(world: System) -> None:
    request_id = await world.submit_one(OWNER, "shop-example.web-hosting", {"tech": WEBMASTER})
    tokens = [(await world.token_mail(email_of(nic), request_id)).token for nic in (OWNER, WEBMASTER)]
    assert (await world.act(WEBMASTER, request_id, "resend")).status_code == 202
    tokens += [(await world.token_mail(email_of(nic), request_id, count=2)).token for nic in (OWNER, WEBMASTER)]
    for nic, token in zip((WEBMASTER, OWNER), tokens[2:][::-1], strict=True):
        assert (await world.act(nic, request_id, "accept", token)).status_code == 200
    await world.wait_state(OWNER, request_id, "done")

    assert world.capture
    on_the_bus = b"\n".join(m.body for m in world.capture.messages)
    in_tables = []
    for schema in SCHEMAS:
        tables = await world.sql(
            schema, "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        for table in tables:
            rows = await world.sql(schema, f'SELECT t::text AS row FROM "{table["table_name"]}" t')
            in_tables += [r["row"] for r in rows]
    assert in_tables, "the tables were read"
    logs = world.logs()
    for token in tokens:
        assert token.encode() not in on_the_bus
        assert not [row for row in in_tables if token in row]
        assert token not in logs

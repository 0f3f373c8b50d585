"""The OpenAPI document says exactly what the API answers (the app in process, real PostgreSQL):
every answer, success or problem, has a status the document lists for its operation, under the
media type it names, and its body validates against the schema given there, every member
documented; and every status the document lists is answered here at least once, but the 500s
and the 503 of /readyz."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jsonschema
import pytest
from contacts_requests import schema
from contacts_requests.api import create_api
from contacts_requests.consumers import HANDLERS
from contacts_requests.domain import ReminderSchedule
from contacts_shared.auth import SUPPORT_ROLE, mint_token
from contacts_shared.contracts import (
    AccountUpserted,
    ContactChangeTokenIssued,
    ContactChangeVetted,
    Contract,
    Phase,
    ServiceUpserted,
    Zone,
    envelope_for,
)
from contacts_shared.handling import by_routing_key
from contacts_tools.testing import schema_pool

SECRET = "s" * 32
OWNER, WEBMASTER, OLD_TECH, BILLER = "aa11111-ovh", "bb22222-ovh", "cc33333-ovh", "dd44444-ovh"
SERVICE = "shop-example.web-hosting"
TTL = timedelta(days=14)
ONE, ANSWER = "/v1/contact-changes/{request_id}", "/v1/contact-changes/{request_id}/{action}"
SUBMIT = "/v1/services/{service}/contact-changes"


def closed(node: Any) -> Any:
    """The schemas with no member left undocumented: `additionalProperties: false` wherever
    an object lists its properties (the document itself leaves room for members added later)."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {key: closed(value) for key, value in node.items()}
    if "properties" in copy and "additionalProperties" not in copy:
        copy["additionalProperties"] = False
    return copy


class DocumentedApi:
    """Calls the API and checks each answer against the app's own OpenAPI document."""

    def __init__(self, client: httpx.AsyncClient, document: dict[str, Any]) -> None:
        self.client, self.document = client, document
        self.seen: set[tuple[str, str, str]] = set()

    async def call(self, method: str, template: str, nic: str | None = None, *, agent: bool = False, **kwargs: Any) -> Any:
        params = {k: kwargs.pop(k) for k in ("request_id", "service", "action", "confirmer", "batch_id") if k in kwargs}
        path = template.replace("{nic}", "{confirmer}").format(**params)
        if "action" in params:  # the document has one path per action
            template = template.replace("{action}", params["action"])
        roles = [SUPPORT_ROLE] if agent else []
        headers = {"Authorization": f"Bearer {mint_token(SECRET, nic, roles=roles)}"} if nic else {}
        response = await self.client.request(method, path, headers=headers, **kwargs)
        status = str(response.status_code)
        responses = self.document["paths"][template][method]["responses"]
        assert status in responses, f"{method} {path}: {status} is not documented: {response.text}"
        media_type = response.headers["content-type"].split(";")[0]
        content = responses[status]["content"]
        assert media_type in content, f"{method} {path}: {status} answered {media_type}, documented {list(content)}"
        schema = {**content[media_type]["schema"], "components": closed(self.document["components"])}
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        body = response.json() if media_type.endswith("json") else response.text  # text/csv: a string
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
        assert not errors, f"{method} {path}: {status} body differs from the document: {errors}\n{response.text}"
        self.seen.add((method, template, status))
        return body

    def unanswered(self, prefix: str = "/", *, but: tuple[str, ...] = ()) -> set[tuple[str, str, str]]:
        """What the document lists under `prefix` (`but` those) and no call answered; a 500 never
        is, a 503 only with the database away (tests/test_api_outage.py)."""
        documented = {
            (method, path, status)
            for path, operations in self.document["paths"].items()
            for method, operation in operations.items()
            for status in operation["responses"]
            if path.startswith(prefix) and not path.startswith(but) and status not in ("500", "503")
        }
        return documented - self.seen


REMINDERS = ReminderSchedule(timedelta(days=3), timedelta(days=1), 2)


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("requests", schema.MIGRATIONS) as pool:
        yield pool


async def deliver(pool: asyncpg.Pool, *messages: Contract) -> None:
    handlers = by_routing_key(HANDLERS)
    for message in messages:
        envelope = envelope_for(message)
        async with pool.acquire() as conn, conn.transaction():
            await handlers[envelope.type](conn, envelope, message, request_ttl=TTL, reminders=REMINDERS)


def issued(request_id: str, nic: str, code: str, generation: int = 1) -> ContactChangeTokenIssued:
    return ContactChangeTokenIssued(
        request_id=uuid.UUID(request_id),
        nic=nic,
        token_hash=hashlib.sha256(code.encode()).hexdigest(),
        expires_at=datetime.now(UTC) + TTL,
        generation=generation,
    )


async def a_shop(pool: asyncpg.Pool) -> None:
    await deliver(
        pool,
        *(AccountUpserted(nic=nic, email=f"{nic}@shop-example.test", zone=Zone.EU) for nic in (OWNER, WEBMASTER, OLD_TECH, BILLER)),
        ServiceUpserted(service=SERVICE, type="web-hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER),
    )


async def test_every_answer_is_one_the_document_describes(pool: asyncpg.Pool) -> None:
    await a_shop(pool)
    app = create_api(pool=pool, jwt_secret=SECRET, request_ttl=TTL)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://contacts.test") as client:
        api = DocumentedApi(client, app.openapi())
        await api.call("get", "/healthz")
        await api.call("get", "/readyz")
        await api.call("get", "/v1/me/contacts", OWNER)

        # Submitting: accepted, then each refusal.
        (tech,) = (await api.call("post", SUBMIT, OWNER, service=SERVICE, json={"tech": WEBMASTER}))["items"]
        assert "open_request_id" in await api.call("post", SUBMIT, OWNER, service=SERVICE, json={"tech": WEBMASTER})
        await api.call("post", SUBMIT, OLD_TECH, service=SERVICE, json={"billing": OLD_TECH})  # 403
        await api.call("post", SUBMIT, OWNER, service="nothing.example", json={"tech": WEBMASTER})  # 404
        await api.call("post", SUBMIT, OWNER, service=SERVICE, json={"admin": "zz99999-ovh"})  # 422
        (billing,) = (await api.call("post", SUBMIT, OWNER, service=SERVICE, json={"billing": WEBMASTER}))["items"]

        # Reading.
        page = await api.call("get", "/v1/me/contact-changes", OWNER, params={"limit": 1})
        await api.call("get", "/v1/me/contact-changes", OWNER, params={"cursor": page["next_cursor"]})
        await api.call("get", "/v1/me/contact-changes", OWNER, params={"cursor": "not one of ours"})  # 422
        await api.call("get", ONE, WEBMASTER, request_id=tech["id"])
        await api.call("get", ONE, OWNER, request_id=str(uuid.uuid4()))  # 404
        await api.call("get", ONE, OWNER, request_id="not-a-uuid")  # 422

        # Finding: my services paged and filtered, my requests of one service, my history downloaded.
        mine = await api.call("get", "/v1/me/contacts", OWNER, params={"role": "admin", "type": "web-hosting", "q": "SHOP-", "limit": 1})
        assert [s["service"] for s in mine["items"]] == [SERVICE] and mine["next_cursor"] is None
        await api.call("get", "/v1/me/contacts", OWNER, params={"cursor": "not one of ours"})  # 422
        await api.call("get", "/v1/me/contacts", OWNER, params={"role": "owner"})  # 422
        of_service = await api.call("get", "/v1/me/contact-changes", OWNER, params={"service": SERVICE})
        assert {i["id"] for i in of_service["items"]} == {tech["id"], billing["id"]}
        export = "/v1/me/contact-changes/export"
        assert {i["id"] for i in (await api.call("get", export, OWNER))["items"]} == {tech["id"], billing["id"]}
        assert (await api.call("get", export, OWNER, params={"format": "csv"})).startswith("request_id,service,")
        await api.call("get", export, OWNER, params={"format": "xlsx"})  # 422
        await api.call("get", export)  # 401

        # Answering, resending and cancelling: refusals while the request is being checked.
        for action in ("accept", "decline", "resend", "cancel"):
            body = {"json": {"token": "123456"}} if action in ("accept", "decline") else {}
            await api.call("post", ANSWER, None, request_id=tech["id"], action=action, **body)  # 401
            await api.call("post", ANSWER, OLD_TECH, request_id=tech["id"], action=action, **body)  # 403
            await api.call("post", ANSWER, BILLER, request_id=tech["id"], action=action, **body)  # 404
            await api.call("post", ANSWER, OWNER, request_id="not-a-uuid", action=action, **body)  # 422
            if action != "cancel":
                state = await api.call("post", ANSWER, OWNER, request_id=tech["id"], action=action, **body)  # 409
                assert state["state"] == "checking"

        # Once vetted, with codes mailed: accept, resend, decline.
        await deliver(
            pool,
            ContactChangeVetted(request_id=uuid.UUID(tech["id"]), phase=Phase.submit, approved=True),
            issued(tech["id"], WEBMASTER, "code-w"),
        )
        await api.call("post", ANSWER, WEBMASTER, request_id=tech["id"], action="accept", json={"token": "wrong"})  # 422
        await api.call("post", ANSWER, WEBMASTER, request_id=tech["id"], action="accept", json={"token": "code-w"})
        await api.call("post", ANSWER, OWNER, request_id=tech["id"], action="resend")  # 202
        await deliver(pool, issued(tech["id"], OWNER, "code-o", generation=2))  # the resend's round
        declined = await api.call("post", ANSWER, OWNER, request_id=tech["id"], action="decline", json={"token": "code-o"})
        assert declined["state"] == "declined"

        # Cancelling the other one, then once too often.
        await api.call("post", ANSWER, WEBMASTER, request_id=billing["id"], action="cancel")  # 403
        await api.call("post", ANSWER, OWNER, request_id=billing["id"], action="cancel")
        await api.call("post", ANSWER, OWNER, request_id=billing["id"], action="cancel")  # 409

        # Not signed in, everywhere else.
        await api.call("get", "/v1/me/contacts")
        await api.call("post", SUBMIT, service=SERVICE, json={"tech": WEBMASTER})
        await api.call("get", "/v1/me/contact-changes")
        await api.call("get", ONE, request_id=tech["id"])

    assert api.unanswered(but=(SUPPORT_PREFIX, BATCHES)) == set()


SUPPORT_PREFIX, BATCHES = "/v1/support/", "/v1/contact-change-batches"
AGENT = "zz99999-ovh"
SUPPORT = "/v1/support/contact-changes/{request_id}"
SUPPORT_ACTION = "/v1/support/contact-changes/{request_id}/{action}"
UNLOCK = "/v1/support/contact-changes/{request_id}/confirmers/{nic}/unlock"
WHY = {"json": {"reason": "ticket 4411"}}


async def test_every_answer_of_the_support_desk_is_one_the_document_describes(pool: asyncpg.Pool) -> None:
    await a_shop(pool)
    app = create_api(pool=pool, jwt_secret=SECRET, request_ttl=TTL)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://contacts.test") as client:
        api = DocumentedApi(client, app.openapi())
        (tech,) = (await api.call("post", SUBMIT, OWNER, service=SERVICE, json={"tech": WEBMASTER}))["items"]
        (billing,) = (await api.call("post", SUBMIT, OWNER, service=SERVICE, json={"billing": WEBMASTER}))["items"]
        rid = tech["id"]
        await deliver(
            pool,
            ContactChangeVetted(request_id=uuid.UUID(rid), phase=Phase.submit, approved=True),
            issued(rid, WEBMASTER, "code-w"),
        )
        for _ in range(5):  # the webmaster's code locked
            await api.call("post", ANSWER, WEBMASTER, request_id=rid, action="accept", json={"token": "wrong"})

        # Looking up: found, paged, refused.
        services = "/v1/support/services/{service}"
        page = await api.call("get", services, AGENT, agent=True, service=SERVICE, params={"limit": 1})
        assert page["service"]["contacts"]["tech"] == OLD_TECH and page["next_cursor"]
        await api.call("get", services, AGENT, agent=True, service="nothing.example")  # 404
        await api.call("get", services, AGENT, agent=True, service=SERVICE, params={"cursor": "not one of ours"})  # 422
        accounts = "/v1/support/accounts/{nic}/contact-changes"
        await api.call("get", accounts, AGENT, agent=True, confirmer=WEBMASTER)
        await api.call("get", accounts, AGENT, agent=True, confirmer="zz00000-ovh")  # 404
        await api.call("get", accounts, AGENT, agent=True, confirmer="not a nic")  # 422
        seen = await api.call("get", SUPPORT, AGENT, agent=True, request_id=rid)
        assert {c["nic"]: c["locked"] for c in seen["confirmers"]} == {OWNER: False, WEBMASTER: True}
        await api.call("get", SUPPORT, AGENT, agent=True, request_id=str(uuid.uuid4()))  # 404
        await api.call("get", SUPPORT, AGENT, agent=True, request_id="not-a-uuid")  # 422

        # Unlocking: done, then refused.
        unlocked = await api.call("post", UNLOCK, AGENT, agent=True, request_id=rid, confirmer=WEBMASTER, **WHY)
        assert not next(c for c in unlocked["confirmers"] if c["nic"] == WEBMASTER)["locked"]
        await api.call("post", UNLOCK, AGENT, agent=True, request_id=rid, confirmer=WEBMASTER, **WHY)  # 409: not locked
        await api.call("post", UNLOCK, AGENT, agent=True, request_id=rid, confirmer=BILLER, **WHY)  # 404: not a confirmer
        await api.call("post", UNLOCK, AGENT, agent=True, request_id=rid, confirmer=WEBMASTER, json={"reason": ""})  # 422

        # Resending and cancelling: done, then refused.
        for action in ("resend", "cancel"):
            await api.call("post", SUPPORT_ACTION, AGENT, agent=True, request_id=rid, action=action, **WHY)
            await api.call("post", SUPPORT_ACTION, AGENT, agent=True, request_id=str(uuid.uuid4()), action=action, **WHY)  # 404
            await api.call("post", SUPPORT_ACTION, AGENT, agent=True, request_id=rid, action=action, json={})  # 422
        await api.call("post", SUPPORT_ACTION, AGENT, agent=True, request_id=rid, action="cancel", **WHY)  # 409
        await api.call("post", SUPPORT_ACTION, AGENT, agent=True, request_id=rid, action="resend", **WHY)  # 409
        await api.call("post", UNLOCK, AGENT, agent=True, request_id=billing["id"], confirmer=OWNER, **WHY)  # 409: still checking

        # Not an agent, or not signed in, everywhere: 404 and 401.
        for nic in (OWNER, None):
            await api.call("get", services, nic, service=SERVICE)
            await api.call("get", accounts, nic, confirmer=OWNER)
            await api.call("get", SUPPORT, nic, request_id=rid)
            await api.call("post", UNLOCK, nic, request_id=rid, confirmer=WEBMASTER, **WHY)
            for action in ("resend", "cancel"):
                await api.call("post", SUPPORT_ACTION, nic, request_id=rid, action=action, **WHY)

    assert api.unanswered(SUPPORT_PREFIX) == set()


async def test_every_answer_about_batches_is_one_the_document_describes(pool: asyncpg.Pool) -> None:
    await a_shop(pool)
    other = "blog-example.web-hosting"
    await deliver(pool, ServiceUpserted(service=other, type="web-hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER))
    app = create_api(pool=pool, jwt_secret=SECRET, request_ttl=TTL)
    one, answer = BATCHES + "/{batch_id}", BATCHES + "/{batch_id}/{action}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://contacts.test") as client:
        api = DocumentedApi(client, app.openapi())
        changes = [{"service": SERVICE, "tech": WEBMASTER}, {"service": other, "tech": WEBMASTER}, {"service": "nothing.example", "tech": WEBMASTER}]
        submitted = await api.call("post", BATCHES, OWNER, json={"changes": changes})
        assert len(submitted["items"]) == 2 and len(submitted["refused"]) == 1
        await api.call("post", BATCHES, OWNER, json={"changes": [{"service": SERVICE}]})  # 422
        await api.call("post", BATCHES, json={"changes": changes})  # 401
        batch_id = submitted["batch_id"]
        await api.call("get", one, OWNER, batch_id=batch_id)
        await api.call("get", one, BILLER, batch_id=batch_id)  # 404
        await api.call("get", one, OWNER, batch_id="not-a-uuid")  # 422
        await api.call("get", one, batch_id=batch_id)  # 401

        for item in submitted["items"]:
            await deliver(
                pool,
                ContactChangeVetted(request_id=uuid.UUID(item["id"]), phase=Phase.submit, approved=True),
                issued(item["id"], WEBMASTER, "batch-code-w"),
                issued(item["id"], OWNER, "batch-code-o"),
            )
        for action in ("accept", "decline"):
            await api.call("post", answer, BILLER, batch_id=batch_id, action=action, json={"token": "x"})  # 404
            await api.call("post", answer, WEBMASTER, batch_id=batch_id, action=action, json={"token": "wrong"})  # 422
            await api.call("post", answer, WEBMASTER, batch_id=batch_id, action=action, json={})  # 422
            await api.call("post", answer, batch_id=batch_id, action=action, json={"token": "x"})  # 401
        accepted = await api.call("post", answer, WEBMASTER, batch_id=batch_id, action="accept", json={"token": "batch-code-w"})
        assert {c["state"] for i in accepted["items"] for c in i["confirmers"] if c["nic"] == WEBMASTER} == {"accepted"}
        await api.call("post", answer, WEBMASTER, batch_id=batch_id, action="decline", json={"token": "batch-code-w"})  # 409
        declined = await api.call("post", answer, OWNER, batch_id=batch_id, action="decline", json={"token": "batch-code-o"})
        assert {i["state"] for i in declined["items"]} == {"declined"}
        await api.call("post", answer, OWNER, batch_id=batch_id, action="accept", json={"token": "batch-code-o"})  # 409

    assert api.unanswered(BATCHES) == set()

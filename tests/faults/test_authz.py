"""Nobody let in: every route of the HTTP API as a NIC that is no party, and with no, expired,
badly signed or unsigned (`alg: none`) JWTs; then the API fuzzed from its own OpenAPI document.

(tests/e2e covers a stranger accepting and a non-contact submitting; this walks every route.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
import schemathesis
from contacts_shared.auth import mint_token
from faults.conftest import OwnInfrastructure
from faults.flows import assert_no_secrets_in_logs
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from security.table import tried
from seed import HOSTING, OLD_TECH, OWNER, STRANGER, WEBMASTER, email_of, feed_world
from support import System, running_system

PROBLEM = "application/problem+json"
BATCHES = "/v1/contact-change-batches"


@pytest.fixture(scope="module")
async def world(own_infrastructure: OwnInfrastructure) -> AsyncIterator[System]:
    """One system for the module: the seed's world with an open request of the owner."""
    infra = own_infrastructure
    async with running_system(infra.postgres.url, infra.rabbit.url, "faults-authz") as system:
        await feed_world(system)
        yield system
    assert_no_secrets_in_logs(system)


@pytest.fixture(scope="module")
async def open_request(world: System) -> str:
    return await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})


async def routes(system: System, request_id: str) -> list[tuple[str, str, dict | None]]:
    """(method, concrete path, JSON body) of every operation the API documents under /v1 (the
    support desk's included: a customer is no agent)."""
    async with httpx.AsyncClient(base_url=system.api_url) as client:
        document = (await client.get("/openapi.json")).json()
    found = []
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        concrete = (
            path.replace("{request_id}", request_id).replace("{service}", HOSTING).replace("{nic}", WEBMASTER).replace("{batch_id}", str(uuid.uuid4()))
        )
        for method in operations:
            body = {"token": "x" * 20} if method == "post" else None
            if "contact-changes" in path and path.startswith("/v1/services/"):
                body = {"tech": WEBMASTER}
            elif path.startswith("/v1/support/") and method == "post":
                body = {"reason": "a customer trying the support desk"}
            elif path == BATCHES:
                body = {"changes": [{"service": HOSTING, "tech": WEBMASTER}]}
            found.append((method.upper(), concrete, body))
    assert len(found) >= 7, found
    return found


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
    )
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status and body["title"]
    return body


async def test_every_route_as_a_nic_that_is_no_party_shows_nothing(world: System, open_request: str) -> None:
    tried_routes = await routes(world, open_request)
    async with world.api(STRANGER) as client:
        for method, path, body in tried_routes:
            response = await client.request(method, path, json=body)
            if path.startswith("/v1/me/"):
                # The stranger's own lists: empty, never someone else's data.
                assert response.status_code == 200, response.text
                assert response.json()["items"] == []
                continue
            if path == BATCHES:
                # The stranger's own batch: nothing created, the service refused as not found.
                assert response.status_code == 202, response.text
                assert [r["problem"]["status"] for r in response.json()["refused"]] == [404]
                assert response.json()["items"] == [] and OWNER not in response.text and OLD_TECH not in response.text
                continue
            problem = assert_problem(response, 404)
            text = response.text
            for secret in (OWNER, WEBMASTER, OLD_TECH, HOSTING) if "contact-changes/" in path else (OWNER, OLD_TECH):
                assert secret not in text, f"{method} {path} leaks {secret}: {problem}"
    # And the request is untouched.
    assert (await world.request(OWNER, open_request))["state"] in (
        "checking",
        "validating",
    )
    for method, path, _ in tried_routes:
        shown = path.replace(open_request, "{id}")
        answer = "200 with an empty list (own lists)" if path.startswith("/v1/me/") else "404, nothing of the request in it"
        if path == BATCHES:
            answer = "202, nothing created: the service refused as not found"
        tried(f"BOLA: {method} {shown} as a NIC that is no party", answer)


def _bad_tokens(system: System) -> dict[str, str | None]:
    now = int(time.time())
    return {
        "no JWT": None,
        "expired JWT": jwt.encode(
            {"sub": OWNER, "iat": now - 7200, "exp": now - 3600},
            system.jwt_secret,
            algorithm="HS256",
        ),
        "wrong signature": mint_token("not-the-secret-" + system.jwt_secret, OWNER),
        "alg none": jwt.encode({"sub": OWNER, "iat": now, "exp": now + 3600}, None, algorithm="none"),
        "garbage": "not.a.jwt",
    }


async def test_every_route_refuses_missing_expired_forged_and_unsigned_jwts(world: System, open_request: str) -> None:
    for name, token in _bad_tokens(world).items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=world.api_url, headers=headers) as client:
            for method, path, body in await routes(world, open_request):
                response = await client.request(method, path, json=body)
                assert_problem(response, 401)
                assert response.headers.get("www-authenticate", "").startswith("Bearer"), name
        # The same token as the session cookie is refused the same way.
        if token:
            async with httpx.AsyncClient(base_url=world.api_url, cookies={"contacts_session": token}) as client:
                assert_problem(await client.get("/v1/me/contacts"), 401)
        tried(f"every route with {name} (header and cookie)", "401 problem details with WWW-Authenticate: Bearer")


async def test_wrong_tries_lock_only_that_confirmer(world: System, open_request: str) -> None:
    """(tests/e2e/test_tokens.py covers the lock, reuse, foreign tokens, resend and expiry.)"""
    owner = await world.token_mail(email_of(OWNER), open_request)
    webmaster = await world.token_mail(email_of(WEBMASTER), open_request)
    for attempt in range(5):
        assert_problem(
            await world.act(WEBMASTER, open_request, "accept", f"guess-{attempt:04d}"),
            422,
        )
    assert_problem(await world.act(WEBMASTER, open_request, "accept", webmaster.token), 422)  # locked
    # The owner's own counter is untouched: the owner's token still works.
    assert (await world.act(OWNER, open_request, "accept", owner.token)).status_code == 200


# --- fuzzing from the OpenAPI document (last: it may lock, answer or cancel the open request) --------


def fuzz(system: System, open_request: str, examples: int) -> list[str]:
    """Generated requests for every operation, valid and invalid, signed in as the owner (a party
    of real data), on random ids and on the open request; returns what went wrong."""
    schema = schemathesis.openapi.from_url(f"{system.api_url}/openapi.json")
    auth = {"Authorization": f"Bearer {system.jwt(OWNER)}"}
    failures: list[str] = []
    calls = 0

    for result in schema.get_all_operations():
        operation = result.ok()
        uses_request = "{request_id}" in operation.path
        for mode in schemathesis.GenerationMode:
            for on_real in (False, True) if uses_request else (False,):
                strategy = operation.as_strategy(
                    generation_mode=mode,
                    path_parameters={"request_id": open_request} if on_real else None,
                )

                @given(case=strategy)
                @settings(
                    max_examples=examples,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    derandomize=True,
                    database=None,
                )
                def check(case: schemathesis.Case) -> None:
                    nonlocal calls
                    calls += 1
                    response = case.call(headers=auth, timeout=15)
                    where = f"{case.method} {case.formatted_path}"
                    if response.status_code >= 500:
                        failures.append(f"{where}: {response.status_code} {response.text[:300]}")
                    elif response.status_code >= 400:
                        content_type = " ".join(
                            {k.lower(): v for k, v in response.headers.items()}.get("content-type", [])
                        )
                        body = response.json() if content_type.startswith(PROBLEM) else {}
                        if body.get("status") != response.status_code or not body.get("title"):
                            failures.append(f"{where}: {response.status_code} {content_type} {response.text[:300]}")

                with contextlib.suppress(Unsatisfiable):  # nothing invalid to make of an operation without inputs
                    check()
    assert calls > 100, calls
    print(f"\n[schemathesis] {calls} generated requests, {len(failures)} failures")
    return failures


async def test_fuzzed_requests_never_5xx_and_errors_are_problem_details(world: System, open_request: str) -> None:
    failures = await asyncio.to_thread(fuzz, world, open_request, 25)
    assert failures == [], "\n".join(failures[:20])

"""Floods of what sends email: resends and submissions are limited per request and per person,
with 429 problem details and `Retry-After`, counted in PostgreSQL (so concurrent calls, on one
replica or several, cannot slip past). The limits are settings; this module shortens the resend
interval to 1 s and the submissions to 3 an hour to see both limits in seconds."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from security.table import tried
from seed import ACCOUNTANT, HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of
from support import System, eventually

SUBMISSIONS_PER_HOUR = 3


@pytest.fixture(scope="module")
def world_settings() -> dict[str, str]:
    return {"CONTACTS_RESEND_INTERVAL": "1", "CONTACTS_RESENDS_PER_REQUEST": "5", "CONTACTS_SUBMISSIONS_PER_HOUR": str(SUBMISSIONS_PER_HOUR)}


# Each person's submissions count toward their own hourly limit: the resend tests ask as the
# technical contact (twice), the submission flood as the owner.
async def open_request(world: System) -> str:
    """The technical contact hands his role to the webmaster; the codes are mailed."""
    request_id = await world.submit_one(OLD_TECH, HOSTING, {"tech": WEBMASTER})
    await world.token_mail(email_of(WEBMASTER), request_id)
    return request_id


def assert_too_many(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1 and response.json()["retry_after"] == str(retry_after)
    return retry_after


async def test_resends_are_limited_per_request(world: System) -> None:
    request_id = await open_request(world)
    mails = len(world.sink.store.messages(email_of(WEBMASTER)))
    # The first resend is always allowed; at once, a second is not.
    assert (await world.act(OLD_TECH, request_id, "resend")).status_code == 202
    assert assert_too_many(await world.act(WEBMASTER, request_id, "resend")) == 1
    sent = 1
    while sent < 5:  # then one per interval (waiting what Retry-After says), five in all

        async def resent() -> bool:
            return (await world.act(OLD_TECH, request_id, "resend")).status_code == 202

        await eventually(resent, timeout=10, interval=0.25, what="the next resend allowed")
        sent += 1
    await world.token_mail(email_of(WEBMASTER), request_id, count=1 + sent)
    # The sixth never: not now, nor after the interval.
    for _ in range(2):
        retry_after = assert_too_many(await world.act(OLD_TECH, request_id, "resend"))
        assert retry_after > 3600, "past the fifth resend, the wait is what the request has left"
    assert len(world.sink.store.messages(email_of(WEBMASTER))) == mails + sent
    async with world.api(OLD_TECH) as requester:
        assert (await requester.post(f"/v1/contact-changes/{request_id}/cancel")).status_code == 200
    tried("resend flood on one request", "429 + Retry-After after the first; 5 resends in all, 1 a minute")


async def test_concurrent_resends_let_one_through(world: System) -> None:
    request_id = await open_request(world)
    answers = await asyncio.gather(*(world.act(OLD_TECH, request_id, "resend") for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [202] + [429] * 9
    async with world.api(OLD_TECH) as requester:
        assert (await requester.post(f"/v1/contact-changes/{request_id}/cancel")).status_code == 200
    tried("10 resends of one request at the same instant", "1 accepted, 9 × 429 (the count is in PostgreSQL)")


async def test_submissions_are_limited_per_requester(world: System) -> None:
    async def submit_and_cancel() -> None:
        request_id = await world.submit_one(OWNER, HOSTING, {"billing": ACCOUNTANT})
        async with world.api(OWNER) as requester:
            assert (await requester.post(f"/v1/contact-changes/{request_id}/cancel")).status_code == 200

    for _ in range(SUBMISSIONS_PER_HOUR):
        await submit_and_cancel()
    before = (await world.sql("requests", "SELECT count(*) AS n FROM contact_changes"))[0]["n"]
    retry_after = assert_too_many(await world.submit(OWNER, HOSTING, {"billing": ACCOUNTANT}))
    assert 3000 < retry_after <= 3600
    assert (await world.sql("requests", "SELECT count(*) AS n FROM contact_changes"))[0]["n"] == before
    # Another person is not held back by it.
    other = await world.submit(OLD_TECH, HOSTING, {"tech": WEBMASTER})
    assert other.status_code == 202, other.text
    tried("submission flood by one requester", f"429 + Retry-After past {SUBMISSIONS_PER_HOUR} an hour (a setting; 30 by default)")

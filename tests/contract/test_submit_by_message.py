"""`contact_change.submit` from another system (a support tool): idempotent on its
`idempotency_key`, and its outcome, refusal included, published as `contact_change.state_changed`
carrying that key, so the tool can follow what it asked for."""

from __future__ import annotations

import uuid

import pytest
from contacts_requests.consumers import refused_request_id
from contacts_shared.contracts import ContactChanges, ContactChangeSubmit, ContactType
from seed import CANADIAN, HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of, feed_world
from support import System, eventually

pytestmark = pytest.mark.e2e


async def _submissions_handled(system: System, count: int) -> bool:
    rows = await system.sql("requests", "SELECT count(*) AS n FROM inbox WHERE routing_key = 'contact_change.submit'")
    return rows[0]["n"] == count


async def test_same_idempotency_key_again_creates_one_request_and_its_states_are_published(system: System) -> None:
    await feed_world(system)
    assert system.capture
    submit = ContactChangeSubmit(
        requester=OWNER, service=HOSTING, changes=ContactChanges(tech=WEBMASTER), idempotency_key="ticket-4711"
    )
    # Several deliveries of the same intent (a retrying publisher): different message ids, one
    # key; the service handles some of them concurrently.
    await system.publish(*[submit] * 4)
    await eventually(lambda: _submissions_handled(system, 4), timeout=20, what="every submission handled")

    rows = await system.sql("requests", "SELECT id FROM contact_changes WHERE service = $1", HOSTING)
    assert len(rows) == 1
    request_id = str(rows[0]["id"])
    checking = await system.capture.wait_for(
        "contact_change.state_changed", request_id=request_id, state="checking", idempotency_key="ticket-4711"
    )
    assert checking["data"]["from"] == OLD_TECH and checking["data"]["to"] == WEBMASTER
    validating = await system.capture.wait_for("contact_change.state_changed", request_id=request_id, state="validating")
    assert validating["data"]["type"] == "tech"
    announced = {b["data"]["request_id"] for b in system.capture.bodies("contact_change.state_changed")}
    assert announced == {request_id}


@pytest.mark.parametrize(
    ("service", "new_tech", "expected_from", "reason"),
    [
        (HOSTING, CANADIAN, OLD_TECH, "zone"),  # contacts are managed within one zone
        ("unknown.example", WEBMASTER, WEBMASTER, "No such service"),  # no holder: `from` repeats `to`
    ],
)
async def test_refused_submission_is_published_as_rejected_with_the_reason(
    system: System, service: str, new_tech: str, expected_from: str, reason: str
) -> None:
    await feed_world(system)
    assert system.capture
    submit = ContactChangeSubmit(
        requester=OWNER, service=service, changes=ContactChanges(tech=new_tech), idempotency_key="ticket-0815"
    )
    await system.publish(submit)

    rejected = await system.capture.wait_for(
        "contact_change.state_changed", idempotency_key="ticket-0815", state="rejected"
    )
    data = rejected["data"]
    assert data["request_id"] == str(refused_request_id(submit, ContactType.tech))
    assert (data["service"], data["type"], data["from"], data["to"]) == (service, "tech", expected_from, new_tech)
    assert reason.lower() in data["reason"].lower()
    assert {"nic": OWNER, "role": "requester"}.items() <= data["parties"][0].items()
    assert not await system.sql("requests", "SELECT 1 FROM contact_changes")
    # The requester learns it as for any refused request.
    (mail,) = await system.wait_mails(f"{OWNER}@example.test", "refused")
    assert reason.lower() in mail.body.lower()


async def test_completed_follows_done_and_a_replayed_submit_announces_the_current_state(system: System) -> None:
    """What a publisher following its change sees: `contact_change.completed` after the `done`
    state change (as docs/integration.md says), and, when it publishes its submit again with the
    same key (unsure the first went through), the current state of its request, with the key."""
    await feed_world(system)
    assert system.capture
    submit = ContactChangeSubmit(
        requester=OWNER, service=HOSTING, changes=ContactChanges(tech=WEBMASTER), idempotency_key="ticket-5150"
    )
    await system.publish(submit)
    checking = await system.capture.wait_for("contact_change.state_changed", idempotency_key="ticket-5150")
    request_id = checking["data"]["request_id"]
    for nic in (WEBMASTER, OWNER):
        mail = await system.token_mail(email_of(nic), request_id)
        assert (await system.act(nic, request_id, "accept", mail.token)).status_code == 200
    await system.capture.wait_for("contact_change.completed", request_id=request_id)

    about_it = [
        (m.routing_key, m.json()["data"].get("state"))
        for m in system.capture.messages
        if m.routing_key in ("contact_change.state_changed", "contact_change.completed")
        and m.json()["data"]["request_id"] == request_id
    ]
    assert about_it == [
        ("contact_change.state_changed", "checking"),
        ("contact_change.state_changed", "validating"),
        ("contact_change.state_changed", "applying"),
        ("contact_change.state_changed", "done"),
        ("contact_change.completed", None),
    ]

    await system.publish(submit)  # a new message_id, the same key
    replayed = await system.capture.wait_for(
        "contact_change.state_changed", request_id=request_id, state="done", idempotency_key="ticket-5150"
    )
    assert {p["role"] for p in replayed["data"]["parties"]} == {"requester", "from", "to"}
    assert len(await system.sql("requests", "SELECT 1 FROM contact_changes")) == 1
    # The notifier took the replayed `done` (claimed it) and mailed nobody a second time.
    await eventually(
        lambda: system.sql("notifier", "SELECT 1 FROM inbox WHERE message_id = $1", uuid.UUID(replayed["message_id"])),
        what="the notifier to take the replayed state",
    )
    outcome = await system.sql(
        "notifier", "SELECT nic FROM mails WHERE kind = 'outcome' AND subject LIKE 'Contact change done%' AND request_id = $1", uuid.UUID(request_id)
    )
    assert sorted(r["nic"] for r in outcome) == sorted([OWNER, OLD_TECH, WEBMASTER])

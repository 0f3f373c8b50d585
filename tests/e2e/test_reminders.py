"""Reminders: a confirmer who has not answered gets a fresh code after a while and again before
the request expires (here seconds instead of days), the old code stops working, the history
says so; nobody who answered, nothing for a request no longer open, no more than configured."""

from __future__ import annotations

import pytest
from seed import HOSTING, OWNER, WEBMASTER, email_of
from support import System, eventually

pytestmark = pytest.mark.e2e

REMINDER = "reminder: please confirm"


@pytest.fixture
def system_settings() -> dict[str, str]:
    # Requests open 30 s: reminders 2 s after the request and 24 s before it expires (6 s after).
    return {"CONTACTS_REQUEST_TTL": "30", "CONTACTS_REMIND_AFTER": "2", "CONTACTS_REMIND_BEFORE_EXPIRY": "24", "CONTACTS_REMINDERS": "2"}


async def test_a_confirmer_who_has_not_answered_is_reminded_with_a_fresh_code_twice_at_most(world: System) -> None:
    # A request cancelled at once: its first reminder would come before the other request's.
    cancelled = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    await world.token_mail(email_of(WEBMASTER), cancelled)
    assert (await world.act(OWNER, cancelled, "cancel")).status_code == 200

    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    owner = await world.token_mail(email_of(OWNER), request_id)
    first = await world.token_mail(email_of(WEBMASTER), request_id)
    assert (await world.act(OWNER, request_id, "accept", owner.token)).status_code == 200

    reminded = await world.token_mail(email_of(WEBMASTER), request_id, count=2)
    assert reminded.subject.lower().startswith(REMINDER) and "A reminder: you have not answered" in reminded.body
    assert reminded.token != first.token
    stale = await world.act(WEBMASTER, request_id, "accept", first.token)
    assert stale.status_code == 422, "the code before the reminder still works"
    history = (await world.request(OWNER, request_id))["history"]
    assert any(h["actor"] == "system" and h["reason"] == f"a reminder with new validation codes sent to {WEBMASTER}" for h in history)

    last = await world.token_mail(email_of(WEBMASTER), request_id, count=3)

    async def no_more_planned() -> bool:
        (row,) = await world.sql("requests", "SELECT reminders, next_reminder_at FROM contact_changes WHERE id = $1", request_id)
        return row["reminders"] == 2 and row["next_reminder_at"] is None

    await eventually(no_more_planned, what="the last reminder sent and none planned")
    assert (await world.act(WEBMASTER, request_id, "accept", last.token)).status_code == 200
    await world.wait_state(OWNER, request_id, "done")

    # The owner answered at once: no reminder. The cancelled request: none either.
    assert [m for m in world.mails(email_of(OWNER)) if m.subject.lower().startswith(REMINDER)] == []
    assert [m.request_id for m in world.mails(email_of(WEBMASTER), REMINDER)] == [request_id, request_id]
    assert len(world.mails(email_of(WEBMASTER), "please confirm")) == 4  # 1 for the cancelled request, 3 for this one

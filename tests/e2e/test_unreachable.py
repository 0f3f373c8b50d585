"""A confirmer whose mail server refuses their email for good (550): the notifier gives the
email up after CONTACTS_SMTP_MAX_REFUSALS (5) refusals, the request's history says who could not
be reached (never their address), and the request can still be ended, with its outcome emails."""

from __future__ import annotations

import uuid

import pytest
from seed import HOSTING, OWNER, WEBMASTER, email_of
from support import System, eventually

pytestmark = pytest.mark.e2e


async def test_a_confirmer_the_mail_server_refuses_is_named_in_the_history(world: System) -> None:
    world.sink.refuse(email_of(WEBMASTER))
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    await world.token_mail(email_of(OWNER), request_id)

    async def noted() -> list[dict] | None:
        view = await world.request(OWNER, request_id)
        return [h for h in view["history"] if "could not be reached" in (h["reason"] or "")] or None

    (note,) = await eventually(noted, timeout=30, what="the history to name the unreachable confirmer", interval=0.2)
    assert note["actor"] == "system" and note["state"] == "validating"
    assert WEBMASTER in note["reason"] and "550" in note["reason"] and email_of(WEBMASTER) not in note["reason"]
    assert "ask for new codes (Resend), or cancel" in note["reason"]  # what the parties can do
    mails = await world.sql("notifier", "SELECT state, refusals FROM mails WHERE request_id = $1 AND nic = $2", uuid.UUID(request_id), WEBMASTER)
    assert [(m["state"], m["refusals"]) for m in mails] == [("failed", 5)]
    assert world.mails(email_of(WEBMASTER)) == []

    response = await world.act(OWNER, request_id, "cancel")
    assert response.status_code == 200, response.text
    await world.wait_mails(email_of(OWNER), "cancelled")

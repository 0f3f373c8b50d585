"""Who is told what (section 7) and the token email's content (section 4), without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from contacts_notifier.domain import (
    confirm_link,
    heads_up_email,
    outcome_email,
    outcome_recipients,
    token_email,
    token_expiry,
    validation_code,
)
from contacts_shared.contracts import (
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    Party,
    RequestState,
    hash_token,
)


def event(state: RequestState, to: str = "bb2-ovh", reason: str | None = None) -> ContactChangeStateChanged:
    parties = [Party(nic="aa1-ovh", email="a@x.test", role="requester"), Party(nic="cc3-ovh", email="c@x.test", role="from")]
    parties.append(Party(nic=to, email=f"{to}@x.test", role="to"))
    return ContactChangeStateChanged(
        request_id=uuid.uuid4(), service="plan", type="tech", from_="cc3-ovh", to=to, state=state, reason=reason,
        parties=parties,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (RequestState.checking, []),
        (RequestState.validating, []),
        (RequestState.applying, []),
        (RequestState.rejected, ["aa1-ovh"]),
        (RequestState.declined, ["aa1-ovh", "bb2-ovh"]),
        (RequestState.cancelled, ["aa1-ovh", "bb2-ovh"]),
        (RequestState.expired, ["aa1-ovh", "bb2-ovh"]),
        (RequestState.failed, ["aa1-ovh", "bb2-ovh"]),
        (RequestState.done, ["aa1-ovh", "bb2-ovh", "cc3-ovh"]),
    ],
)
def test_recipients_per_state(state: RequestState, expected: list[str]) -> None:
    assert [r.nic for r in outcome_recipients(event(state))] == expected


def test_take_over_mails_each_person_once() -> None:
    assert [r.nic for r in outcome_recipients(event(RequestState.done, to="aa1-ovh"))] == ["aa1-ovh", "cc3-ovh"]


def test_rejection_email_gives_the_reason() -> None:
    email = outcome_email(event(RequestState.rejected, reason="the new contact bb2-ovh has an unpaid invoice"), "aa1-ovh")
    assert "refused" in email.subject and "bb2-ovh has an unpaid invoice" in email.body


KEY = b"k" * 32


def test_codes_are_long_and_kept_as_hash() -> None:
    token, digest = validation_code(KEY, "r1", "aa1-ovh", 1)
    assert len(token) == 43 and digest == hash_token(token) and token not in digest
    assert token.replace("-", "").replace("_", "").isalnum()


def test_an_email_written_again_carries_the_same_code() -> None:
    assert validation_code(KEY, "r1", "aa1-ovh", 1) == validation_code(KEY, "r1", "aa1-ovh", 1)


def test_a_code_differs_per_request_confirmer_round_and_key() -> None:
    codes = {
        validation_code(KEY, "r1", "aa1-ovh", 1)[0],
        validation_code(KEY, "r2", "aa1-ovh", 1)[0],
        validation_code(KEY, "r1", "bb2-ovh", 1)[0],
        validation_code(KEY, "r1", "aa1-ovh", 2)[0],
        validation_code(b"other key" * 4, "r1", "aa1-ovh", 1)[0],
    }
    assert len(codes) == 5


def test_token_expires_with_request_at_most_ttl() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert token_expiry(now + timedelta(days=30), now, 3600) == now + timedelta(hours=1)
    assert token_expiry(now + timedelta(minutes=5), now, 3600) == now + timedelta(minutes=5)


def test_token_email_says_what_who_token_link_expiry() -> None:
    link = confirm_link("https://contacts.example/", "r-1", "tok_en")
    assert link == "https://contacts.example/requests/r-1?token=tok_en"
    email = token_email(
        request_id="r-1", service="plan", ctype="tech", from_="cc3-ovh", to="bb2-ovh", requester="aa1-ovh",
        recipient="bb2-ovh", token="tok_en", link=link, expires_at=datetime(2026, 1, 15, 12, 0, tzinfo=UTC),
    )  # fmt: skip
    for words in ("aa1-ovh", "bb2-ovh", "technical", "plan", "tok_en", link, "2026-01-15 12:00 UTC"):
        assert words in email.body


def _validation_requested(requester: str, from_: str) -> ContactChangeValidationRequested:
    return ContactChangeValidationRequested.model_validate(
        {
            "request_id": str(uuid.uuid4()), "service": "plan.web-hosting", "type": "tech", "from": from_, "to": "nw1-ovh",
            "requester": requester, "expires_at": "2026-02-14T12:00:00Z",
            "confirmers": [{"nic": requester, "email": "r@x.test"}, {"nic": "nw1-ovh", "email": "n@x.test"}],
        }
    )  # fmt: skip


def test_a_heads_up_says_who_asks_what_why_you_and_what_you_can_do() -> None:
    replaced = heads_up_email(_validation_requested("ad1-ovh", "ot1-ovh"), "ot1-ovh")
    assert replaced.subject == "Heads-up: nw1-ovh to become the technical contact of plan.web-hosting"
    assert "ad1-ovh asks to make nw1-ovh the technical contact of plan.web-hosting, in your place." in replaced.body
    assert "you are the contact being replaced" in replaced.body
    admin = heads_up_email(_validation_requested("ot1-ovh", "ot1-ovh"), "ad1-ovh")
    assert "ot1-ovh, the technical contact of plan.web-hosting, asks to hand it over to nw1-ovh." in admin.body
    assert "you are the administrative contact of plan.web-hosting" in admin.body
    for email in (replaced, admin):
        assert "ot1-ovh and nw1-ovh" in email.body or "ad1-ovh and nw1-ovh" in email.body
        assert "contact our support" in email.body and "2026-02-14 12:00 UTC" in email.body
        assert "token=" not in email.body and "validation code" not in email.body.lower()

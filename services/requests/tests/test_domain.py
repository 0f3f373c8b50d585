"""The rules of sections 2 to 4, without I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from contacts_requests.contact_change import ContactChange
from contacts_requests.domain import (
    Account,
    Kind,
    Refusal,
    ReminderSchedule,
    ServiceContacts,
    plan_submission,
    refusal_to_change,
    told_beforehand,
)
from contacts_requests.events import (
    Answered,
    CodesAsked,
    CodeUnlocked,
    ContactReplaced,
    ReminderPlanned,
    StateChanged,
    Submitted,
    SupportActed,
    VettingAsked,
)
from contacts_requests.tokens import TokenSlot, check_token
from contacts_shared.contracts import ContactType, Phase, RequestState, hash_token

ADMIN, TECH, BILLING, NEW, OTHER_ZONE, STRANGER = (
    "aa1-ovh", "bb2-ovh", "cc3-ovh", "dd4-ovh", "ee5-ovh", "ff6-ovh",
)  # fmt: skip
SERVICE = ServiceContacts("plan", admin=ADMIN, tech=TECH, billing=BILLING)
ACCOUNTS = {nic: Account(nic, f"{nic}@x.test", "EU") for nic in (ADMIN, TECH, BILLING, NEW, STRANGER)} | {
    OTHER_ZONE: Account(OTHER_ZONE, "e@x.test", "CA")
}


def plan(requester: str, changes: dict[str, str], open_requests: dict | None = None, service=SERVICE):
    typed = {ContactType(k): v for k, v in changes.items()}
    return plan_submission(requester, service, typed, ACCOUNTS, open_requests or {})


@pytest.mark.parametrize(
    ("requester", "changes", "confirmers"),
    [
        (ADMIN, {"tech": NEW}, (ADMIN, NEW)),  # admin names another tech
        (ADMIN, {"billing": NEW}, (ADMIN, NEW)),  # ... or billing
        (ADMIN, {"tech": ADMIN}, (ADMIN,)),  # admin takes over: alone
        (ADMIN, {"billing": ADMIN}, (ADMIN,)),
        (ADMIN, {"admin": NEW}, (ADMIN, NEW)),  # admin hands over admin
        (TECH, {"tech": NEW}, (TECH, NEW)),  # tech replaces himself
        (BILLING, {"billing": NEW}, (BILLING, NEW)),  # billing replaces himself
    ],
)
def test_table_rows_allowed(requester: str, changes: dict[str, str], confirmers: tuple[str, ...]) -> None:
    (planned,) = plan(requester, changes)
    assert planned.confirmers == confirmers
    assert planned.to == next(iter(changes.values()))
    assert planned.from_ == SERVICE.holder(planned.type)


@pytest.mark.parametrize(
    ("requester", "changes", "told"),
    [
        (ADMIN, {"tech": NEW}, (TECH,)),  # the contact being replaced
        (ADMIN, {"billing": NEW}, (BILLING,)),
        (ADMIN, {"tech": ADMIN}, (TECH,)),  # taken over: told all the same
        (ADMIN, {"admin": NEW}, ()),  # the requester is the one replaced
        (TECH, {"tech": NEW}, (ADMIN,)),  # handing over: the service's admin
        (BILLING, {"billing": NEW}, (ADMIN,)),
    ],
)
def test_those_not_asked_are_told_beforehand(requester: str, changes: dict[str, str], told: tuple[str, ...]) -> None:
    (planned,) = plan(requester, changes)
    assert told_beforehand(requester, planned.from_, SERVICE.admin, planned.confirmers) == told


@pytest.mark.parametrize(
    ("requester", "changes"),
    [(TECH, {"admin": NEW}), (TECH, {"billing": NEW}), (BILLING, {"tech": NEW}), (BILLING, {"admin": NEW})],
)
def test_other_cases_are_forbidden_with_a_reason(requester: str, changes: dict[str, str]) -> None:
    with pytest.raises(Refusal) as refused:
        plan(requester, changes)
    assert refused.value.kind is Kind.forbidden
    assert "only replace yourself" in refused.value.detail


def test_no_contact_gets_not_found_as_for_an_unknown_service() -> None:
    for service in (SERVICE, None):
        with pytest.raises(Refusal) as refused:
            plan(STRANGER, {"tech": NEW}, service=service)
        assert refused.value.kind is Kind.not_found


@pytest.mark.parametrize(
    ("changes", "kind", "field", "words"),
    [
        ({"tech": "zz9-ovh"}, Kind.invalid, "tech", "not a known"),
        ({"tech": TECH}, Kind.invalid, "tech", "already"),
        ({"tech": OTHER_ZONE}, Kind.invalid, "tech", "zone"),
        ({"tech": NEW, "billing": "zz9-ovh"}, Kind.invalid, "billing", "not a known"),  # all or nothing
        ({}, Kind.invalid, "body", "at least one"),
    ],
)
def test_refusals(changes: dict[str, str], kind: Kind, field: str, words: str) -> None:
    with pytest.raises(Refusal) as refused:
        plan(ADMIN, changes)
    assert (refused.value.kind, refused.value.field) == (kind, field)
    assert words in refused.value.detail


def test_open_request_is_a_conflict_naming_it() -> None:
    with pytest.raises(Refusal) as refused:
        plan(ADMIN, {"tech": NEW}, open_requests={ContactType.tech: "r-1"})
    assert refused.value.kind is Kind.conflict and refused.value.extra == {"open_request_id": "r-1"}


def change(state=RequestState.validating, confirmers=None) -> ContactChange:
    return ContactChange(
        id="r", service="plan", type=ContactType.tech, from_=TECH, to=NEW, requester=ADMIN, state=state,
        confirmers=confirmers or {ADMIN: "pending", NEW: "pending"},
    )  # fmt: skip


def test_a_submission_records_the_request_and_asks_the_billing_check() -> None:
    (planned,) = plan(ADMIN, {"tech": NEW})
    submitted = ContactChange.submitted("r", "plan", planned, ADMIN, datetime(2026, 1, 15, tzinfo=UTC))
    assert submitted.state == RequestState.checking and dict(submitted.change.confirmers) == {ADMIN: "pending", NEW: "pending"}
    assert submitted.events == (Submitted(ADMIN), VettingAsked(Phase.submit))


def test_partial_then_full_acceptance_moves_to_applying_and_asks_the_billing_check_again() -> None:
    partial = change().answer(NEW, accept=True)
    assert partial.events == (Answered(NEW, True),) and partial.change.confirmers[NEW] == "accepted"
    full = partial.change.answer(ADMIN, accept=True)
    assert full.state == RequestState.applying
    assert full.events == (
        Answered(ADMIN, True), StateChanged(RequestState.applying, ADMIN, "all confirmers accepted"), VettingAsked(Phase.apply),
    )  # fmt: skip


def test_decline_ends_it_and_answers_are_final() -> None:
    declined = change().answer(NEW, accept=False)
    assert declined.events == (Answered(NEW, False), StateChanged(RequestState.declined, NEW, f"declined by {NEW}"))
    with pytest.raises(Refusal) as refused:
        declined.change.answer(ADMIN, accept=True)
    assert refused.value.kind is Kind.conflict
    partial = change().answer(NEW, accept=True).change
    with pytest.raises(Refusal):
        partial.answer(NEW, accept=True)


def test_who_may_answer_is_decided_before_the_code_is_checked() -> None:
    change().check_answerable(NEW)  # a pending confirmer of an open request
    for who, request, kind in [
        (TECH, change(), Kind.forbidden),  # the previous contact is informed, not asked
        (NEW, change(state=RequestState.checking), Kind.conflict),
        (NEW, change(confirmers={ADMIN: "pending", NEW: "accepted"}), Kind.invalid),  # a used code
    ]:
        with pytest.raises(Refusal) as refused:
            request.check_answerable(who)
        assert refused.value.kind is kind, who


def test_what_a_party_may_do_is_asked_of_the_domain() -> None:
    assert refusal_to_change(ADMIN, SERVICE, ContactType.billing) is None
    assert refusal_to_change(TECH, SERVICE, ContactType.tech) is None  # replaces itself
    assert "may only replace yourself" in (refusal_to_change(TECH, SERVICE, ContactType.admin) or "")
    assert "No such service" in (refusal_to_change(STRANGER, SERVICE, ContactType.tech) or "")
    request = change()
    assert request.may_answer(NEW) and request.may_resend(NEW) and request.may_cancel(ADMIN)
    assert not request.may_answer(TECH) and not request.may_resend(TECH) and not request.may_cancel(NEW)


def test_vetting_asks_the_confirmers_for_codes_and_ignores_stale_answers() -> None:
    checking = change(RequestState.checking)
    approved = checking.vetted_at_submit(True, [], ACCOUNTS, admin=ADMIN)
    assert approved.state == RequestState.validating
    # The technical contact being replaced hears of it (a heads-up), asked nothing.
    assert approved.events == (CodesAsked((ADMIN, NEW), told=(TECH,)), StateChanged(RequestState.validating, "billing-check"))
    assert checking.vetted_at_submit(True, [], {n: a for n, a in ACCOUNTS.items() if n != TECH}, admin=ADMIN).events[0].told == ()
    rejected = checking.vetted_at_submit(False, ["x has an unpaid invoice"], ACCOUNTS)
    assert rejected.state == RequestState.rejected and "unpaid invoice" in rejected.moved.reason
    assert change(RequestState.cancelled).vetted_at_submit(True, [], ACCOUNTS) is None


def test_a_confirmer_whose_account_is_gone_gets_no_code_the_request_is_rejected() -> None:
    gone = change(RequestState.checking).vetted_at_submit(True, [], {ADMIN: ACCOUNTS[ADMIN]})
    assert gone.events == (StateChanged(RequestState.rejected, "system", f"the account {NEW} no longer exists"),)
    with pytest.raises(Refusal) as refused:
        change().resend(ADMIN, {ADMIN: ACCOUNTS[ADMIN]})
    assert (refused.value.kind, refused.value.title) == (Kind.conflict, "Cannot resend")


def test_apply_checks_again_and_that_holder_did_not_move() -> None:
    applying = change(RequestState.applying)
    done = applying.vetted_at_apply(True, [], TECH)
    assert done.events == (StateChanged(RequestState.done, "system"), ContactReplaced())
    assert applying.vetted_at_apply(False, ["unpaid invoice"], TECH).state == RequestState.failed
    moved = applying.vetted_at_apply(True, [], "zz9-ovh")
    assert moved.state == RequestState.failed and "changed meanwhile" in moved.moved.reason
    assert applying.vetted_at_apply(True, [], None).state == RequestState.failed
    assert change(RequestState.done).vetted_at_apply(True, [], TECH) is None


def test_cancel_by_requester_only_while_open() -> None:
    assert change().cancel(ADMIN).state == RequestState.cancelled
    with pytest.raises(Refusal) as refused:
        change().cancel(NEW)
    assert refused.value.kind is Kind.forbidden
    with pytest.raises(Refusal):
        change(RequestState.done).cancel(ADMIN)


def test_resend_goes_to_those_who_have_not_answered() -> None:
    assert change(confirmers={ADMIN: "accepted", NEW: "pending"}).check_resend(NEW) == [NEW]
    assert change(confirmers={ADMIN: "accepted", NEW: "pending"}).check_resend(ADMIN) == [NEW]
    assert change().resend(ADMIN, ACCOUNTS).events == (CodesAsked((ADMIN, NEW), resent_by=ADMIN),)
    with pytest.raises(Refusal) as refused:
        change().check_resend(STRANGER)
    assert refused.value.kind is Kind.not_found
    # The previous contact is a party (sees the request) but neither requester nor confirmer.
    with pytest.raises(Refusal) as refused:
        change().check_resend(TECH)
    assert refused.value.kind is Kind.forbidden


def test_a_used_code_gets_the_generic_refusal() -> None:
    with pytest.raises(Refusal) as refused:
        change(confirmers={ADMIN: "accepted", NEW: "pending"}).answer(ADMIN, accept=True)
    assert (refused.value.kind, refused.value.title) == (Kind.invalid, "Invalid validation code")


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_token_checks() -> None:
    slot = TokenSlot(hash_token("right"), NOW + timedelta(hours=1), failures=0)
    assert check_token(slot, "right", NOW)
    assert not check_token(slot, "wrong", NOW)
    assert not check_token(TokenSlot(slot.token_hash, slot.expires_at, failures=5), "right", NOW)  # locked
    assert not check_token(TokenSlot(slot.token_hash, NOW, failures=0), "right", NOW)  # expired
    assert not check_token(TokenSlot(None, None, failures=0), "right", NOW)  # used or not issued


def test_when_time_runs_out_a_request_ends_by_the_state_it_waited_in() -> None:
    assert change(RequestState.validating).time_is_up().state == RequestState.expired
    assert change(RequestState.checking).time_is_up().state == RequestState.expired
    failed = change(RequestState.applying).time_is_up()
    assert failed.state == RequestState.failed and "apply" in failed.moved.reason
    assert change(RequestState.done).time_is_up() is None


def test_only_a_request_waiting_for_the_billing_check_asks_it_again() -> None:
    assert change(RequestState.checking).awaited_vetting() == Phase.submit
    assert change(RequestState.applying).awaited_vetting() == Phase.apply
    assert change(RequestState.validating).awaited_vetting() is None
    assert change(RequestState.applying).ask_vetting_again().events == (VettingAsked(Phase.apply, again=True),)
    assert change(RequestState.validating).ask_vetting_again() is None


SCHEDULE = ReminderSchedule(after=timedelta(days=3), before_expiry=timedelta(days=1), most=2)
ASKED = datetime(2026, 1, 1, tzinfo=UTC)


def test_reminders_fall_while_the_request_is_open_once_each_at_most_as_many_as_set() -> None:
    expires = ASKED + timedelta(days=14)
    assert SCHEDULE.moments(ASKED, expires) == (ASKED + timedelta(days=3), ASKED + timedelta(days=13))
    assert ReminderSchedule(timedelta(days=3), timedelta(days=1), 1).moments(ASKED, expires) == (ASKED + timedelta(days=3),)
    assert ReminderSchedule(timedelta(days=3), timedelta(days=1), 0).moments(ASKED, expires) == ()
    # A request of 4 days: both moments are the same day; of 2 days, neither falls while it is open.
    assert SCHEDULE.moments(ASKED, ASKED + timedelta(days=4)) == (ASKED + timedelta(days=3),)
    assert SCHEDULE.moments(ASKED, ASKED + timedelta(days=2)) == (ASKED + timedelta(days=1),)
    assert SCHEDULE.moments(ASKED, ASKED + timedelta(hours=12)) == ()


def test_a_due_reminder_sends_fresh_codes_to_those_who_have_not_answered_and_plans_the_next() -> None:
    open_ = dataclasses.replace(
        change(confirmers={ADMIN: "accepted", NEW: "pending"}), created_at=ASKED, expires_at=ASKED + timedelta(days=14)
    )
    assert open_.remind(ASKED + timedelta(days=2), SCHEDULE, ACCOUNTS).events == (ReminderPlanned(0, ASKED + timedelta(days=3)),)
    first = open_.remind(ASKED + timedelta(days=3), SCHEDULE, ACCOUNTS)
    assert first.change.reminders == 1
    assert first.events == (CodesAsked((NEW,), resent_by="system", reminder=True), ReminderPlanned(1, ASKED + timedelta(days=13)))
    second = first.change.remind(ASKED + timedelta(days=13, hours=1), SCHEDULE, ACCOUNTS)
    assert second.events == (CodesAsked((NEW,), resent_by="system", reminder=True), ReminderPlanned(2, None))
    assert second.change.remind(ASKED + timedelta(days=13, hours=2), SCHEDULE, ACCOUNTS).events == (ReminderPlanned(2, None),)  # no third
    for ended in (RequestState.done, RequestState.cancelled, RequestState.expired, RequestState.applying):
        assert dataclasses.replace(open_, state=ended).remind(ASKED + timedelta(days=3), SCHEDULE, ACCOUNTS) is None
    # The one to remind has no account any more: no code to send, the next reminder planned.
    gone = open_.remind(ASKED + timedelta(days=3), SCHEDULE, {n: a for n, a in ACCOUNTS.items() if n != NEW})
    assert gone.events == (ReminderPlanned(1, ASKED + timedelta(days=13)),)


def test_entering_validation_plans_the_first_reminder() -> None:
    checking = dataclasses.replace(change(RequestState.checking), created_at=ASKED, expires_at=ASKED + timedelta(days=14))
    approved = checking.vetted_at_submit(True, [], ACCOUNTS, admin=ADMIN, reminders=SCHEDULE)
    assert approved.events[-1] == ReminderPlanned(0, ASKED + timedelta(days=3))


# --- support agents ---------------------------------------------------------------------------------

AGENT = "zz9-ovh"


def test_an_agent_cancels_an_open_request_for_a_reason_written_and_announced() -> None:
    for state in (RequestState.checking, RequestState.validating):
        decision = change(state).cancel_by_support(AGENT, "  ticket 42:\n asked by phone ")
        assert decision.state == RequestState.cancelled
        assert decision.events == (
            StateChanged(RequestState.cancelled, "support:zz9-ovh", "cancelled by support: ticket 42: asked by phone"),
            SupportActed(AGENT, "cancel", "ticket 42: asked by phone"),
        )
    for state in (RequestState.applying, RequestState.done, RequestState.cancelled):
        with pytest.raises(Refusal) as refused:
            change(state).cancel_by_support(AGENT, "why")
        assert refused.value.kind is Kind.conflict


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_every_agent_action_needs_a_reason_of_reasonable_length(reason: str) -> None:
    for act in (
        lambda c: c.cancel_by_support(AGENT, reason),
        lambda c: c.unlock(AGENT, NEW, reason, locked=True),
        lambda c: c.resend_by_support(AGENT, reason, ACCOUNTS),
    ):
        with pytest.raises(Refusal) as refused:
            act(change())
        assert (refused.value.kind, refused.value.field) == (Kind.invalid, "reason")


def test_an_agent_unlocks_only_a_locked_code_of_a_confirmer_still_to_answer() -> None:
    decision = change().unlock(AGENT, NEW, "typo", locked=True)
    assert decision.change == change()
    assert decision.events == (CodeUnlocked(NEW, "support:zz9-ovh", "typo"), SupportActed(AGENT, "unlock", "typo", NEW))
    refusals = [
        (change(), TECH, True, Kind.not_found),  # informed, not a confirmer
        (change(), NEW, False, Kind.conflict),  # not locked
        (change(confirmers={ADMIN: "pending", NEW: "accepted"}), NEW, True, Kind.conflict),  # answered
        (change(RequestState.checking), NEW, True, Kind.conflict),  # no codes yet
    ]
    for request, nic, locked, kind in refusals:
        with pytest.raises(Refusal) as refused:
            request.unlock(AGENT, nic, "typo", locked=locked)
        assert refused.value.kind is kind


def test_an_agent_resends_to_those_who_have_not_answered_without_answering_for_anyone() -> None:
    decision = change(confirmers={ADMIN: "accepted", NEW: "pending"}).resend_by_support(AGENT, "lost", ACCOUNTS)
    assert decision.events == (CodesAsked((NEW,), resent_by="support:zz9-ovh", why="lost"), SupportActed(AGENT, "resend", "lost"))
    assert decision.change.confirmers == {ADMIN: "accepted", NEW: "pending"}
    with pytest.raises(Refusal) as refused:
        change(RequestState.checking).resend_by_support(AGENT, "lost", ACCOUNTS)
    assert refused.value.kind is Kind.conflict
    with pytest.raises(Refusal) as refused:
        change().resend_by_support(AGENT, "lost", {ADMIN: ACCOUNTS[ADMIN]})
    assert (refused.value.kind, refused.value.title) == (Kind.conflict, "Cannot resend")
    # An agent is no confirmer: the customers' own actions stay refused to them.
    for act in (lambda c: c.answer(AGENT, True), lambda c: c.check_resend(AGENT)):
        with pytest.raises(Refusal):
            act(change())

"""The life of one request (spec section 3): `ContactChange`, the state machine, whose every
operation returns a `Decision` (the request as it then is and the events that happened, in
order: `events`) or refuses. Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from contacts_shared.contracts import ContactType, Phase, RequestState
from contacts_shared.i18n import _l
from contacts_shared.wording import ROLE_NAMES

from contacts_requests.domain import (
    Kind,
    PlannedChange,
    Refusal,
    ReminderSchedule,
    invalid_token,
    may_view,
    not_found,
    refused,
    support_actor,
    support_reason,
    told_beforehand,
)
from contacts_requests.events import (
    Answered,
    CodeRefused,
    CodesAsked,
    CodeUnlocked,
    ContactReplaced,
    Event,
    NotReached,
    ReminderPlanned,
    StateChanged,
    Submitted,
    SupportActed,
    VettingAsked,
)


class ConfirmerState:
    pending = "pending"
    accepted = "accepted"
    declined = "declined"


@dataclass(frozen=True)
class ContactChange:
    """One request as the state machine sees it. Each operation returns a `Decision` (the
    request as it then is, and what happened) or refuses; none changes the record itself."""

    id: str
    service: str
    type: ContactType
    from_: str
    to: str
    requester: str
    state: RequestState
    confirmers: Mapping[str, str]  # nic -> ConfirmerState
    expires_at: datetime | None = None  # as stored (when it is known)
    created_at: datetime | None = None
    reminders: int = 0  # reminders sent so far
    batch_id: str | None = None  # the batch it was submitted in, if any

    @property
    def in_batch(self) -> bool:
        return self.batch_id is not None

    @classmethod
    def submitted(
        cls, request_id: str, service: str, plan: PlannedChange, requester: str, expires_at: datetime, batch_id: str | None = None
    ) -> Decision:
        """A planned change becomes a request, waiting for the billing check (one of a batch's,
        with `batch_id`)."""
        change = cls(
            id=request_id,
            service=service,
            type=plan.type,
            from_=plan.from_,
            to=plan.to,
            requester=requester,
            state=RequestState.checking,
            confirmers=dict.fromkeys(plan.confirmers, ConfirmerState.pending),
            expires_at=expires_at,
            batch_id=batch_id,
        )
        return Decision(change, (Submitted(requester), VettingAsked(Phase.submit)))

    def _require(self, *states: RequestState) -> None:
        if self.state not in states:
            raise Refusal(
                Kind.conflict,
                "Request not open for this",
                _l("This request is %(state)s; it can no longer be changed that way.", state=self.state.value),
                extra={"state": self.state.value},
            )

    def _moved(self, state: RequestState, actor: str, reason: str | None = None, *more: Event, **changes: object) -> Decision:
        return Decision(replace(self, state=state, **changes), (StateChanged(state, actor, reason), *more))  # type: ignore[arg-type]

    def vetted_at_submit(
        self,
        approved: bool,
        reasons: list[str],
        known_accounts: Collection[str],
        admin: str | None = None,
        reminders: ReminderSchedule | None = None,
    ) -> Decision | None:
        """The billing check answered at submission: the confirmers are asked for their codes
        and those told beforehand get a heads-up (`admin`: the service's), and the first
        reminder is planned; or the request is rejected. None when the answer is stale (the
        request moved on)."""
        if self.state != RequestState.checking:
            return None
        if not approved:
            return self._moved(RequestState.rejected, "billing-check", "; ".join(reasons) or "refused by the billing check")
        if gone := _accounts_gone(self.confirmers, known_accounts):
            return self._moved(RequestState.rejected, "system", gone)
        told = told_beforehand(self.requester, self.from_, admin, self.confirmers)
        # A batch's codes go out together, in one email per confirmer (`domain.batch_codes_due`):
        # this request's own message carries only its heads-ups.
        confirmers = () if self.in_batch else tuple(self.confirmers)
        asked = CodesAsked(confirmers, told=tuple(nic for nic in told if nic in known_accounts))
        moved = self._moved(RequestState.validating, "billing-check")
        planned = (self._next_reminder(reminders, 0),) if reminders else ()
        return Decision(moved.change, (asked, *moved.events, *planned))  # the codes are ordered before they are announced

    def _next_reminder(self, schedule: ReminderSchedule, sent: int) -> ReminderPlanned:
        assert self.created_at is not None and self.expires_at is not None, "loaded from the store"
        moments = schedule.moments(self.created_at, self.expires_at)
        return ReminderPlanned(sent, moments[sent] if sent < len(moments) else None)

    def remind(self, now: datetime, schedule: ReminderSchedule, known_accounts: Collection[str]) -> Decision | None:
        """A reminder is due: the confirmers who have not answered get fresh codes (the old ones
        stop working, as with a resend) and the next reminder is planned. A request no longer
        waiting for confirmers is reminded of nothing (None); a confirmer whose account is gone
        has no address to remind (the request then expires in its time)."""
        if self.state != RequestState.validating:
            return None
        planned = self._next_reminder(schedule, self.reminders)
        if planned.at is None or now < planned.at:
            return Decision(self, (planned,))  # not due (the schedule changed): planned anew
        pending = tuple(n for n, s in self.confirmers.items() if s == ConfirmerState.pending and n in known_accounts)
        sent = self.reminders + 1
        asked = (CodesAsked(pending, resent_by="system", reminder=True),) if pending else ()
        return Decision(replace(self, reminders=sent), (*asked, self._next_reminder(schedule, sent)))

    def vetted_at_apply(self, approved: bool, reasons: list[str], current_holder: str | None) -> Decision | None:
        """The billing check answered again before applying: apply only if still approved and
        nobody moved the holder meanwhile. None when the answer is stale."""
        if self.state != RequestState.applying:
            return None
        if not approved:
            return self._moved(RequestState.failed, "billing-check", "; ".join(reasons) or "refused by the billing check")
        if current_holder is None:
            return self._moved(RequestState.failed, "system", "the service no longer exists")
        if current_holder != self.from_:
            reason = f"the {ROLE_NAMES[self.type]} contact changed meanwhile (now {current_holder})"
            return self._moved(RequestState.failed, "system", reason)
        return self._moved(RequestState.done, "system", None, ContactReplaced())

    def check_answerable(self, nic: str) -> None:
        """Refused unless `nic` may answer now, whatever the code: a party not asked to confirm,
        a request no longer waiting for answers, a confirmer who has answered already."""
        if nic not in self.confirmers:
            raise Refusal(Kind.forbidden, "Not asked to confirm", _l("You are informed of this request but not asked to confirm it."))
        self._require(RequestState.validating)
        if self.confirmers[nic] != ConfirmerState.pending:
            # The code was used: refused like any invalid one (spec 4: one generic message).
            raise invalid_token()

    def answer(self, nic: str, accept: bool) -> Decision:
        """A confirmer accepts or declines (token already checked): a decline ends the request,
        the last acceptance sends it to the billing check once more before applying."""
        self.check_answerable(nic)
        confirmers = {**self.confirmers, nic: ConfirmerState.accepted if accept else ConfirmerState.declined}
        answered = Answered(nic, accept)
        if not accept:
            moved = self._moved(RequestState.declined, nic, f"declined by {nic}", confirmers=confirmers)
        elif all(s == ConfirmerState.accepted for s in confirmers.values()):
            moved = self._moved(RequestState.applying, nic, "all confirmers accepted", VettingAsked(Phase.apply), confirmers=confirmers)
        else:
            return Decision(replace(self, confirmers=confirmers), (answered,))
        return Decision(moved.change, (answered, *moved.events))

    def code_refused(self, nic: str) -> Decision:
        """A code that is not good (`tokens.check_token` said so) counts against the confirmer."""
        return Decision(self, (CodeRefused(nic),))

    def cancel(self, nic: str) -> Decision:
        if nic != self.requester:
            raise Refusal(Kind.forbidden, "Not allowed", _l("Only the requester can cancel a request."))
        self._require(RequestState.checking, RequestState.validating)
        return self._moved(RequestState.cancelled, nic, f"cancelled by {nic}")

    def may_answer(self, nic: str) -> bool:
        return refused(self.check_answerable, nic) is None

    def may_resend(self, nic: str) -> bool:
        return refused(self.check_resend, nic) is None

    def may_cancel(self, nic: str) -> bool:
        return refused(self.cancel, nic) is None

    def check_resend(self, nic: str) -> list[str]:
        """Who gets a new token on resend: the confirmers who have not answered. Only the
        requester and the confirmers may ask (spec 4); the previous contact only looks on."""
        if not may_view(nic, self.requester, self.from_, self.to):
            raise not_found()
        if nic != self.requester and nic not in self.confirmers:
            raise Refusal(Kind.forbidden, "Not allowed", _l("Only the requester and the confirmers can ask for new validation codes."))
        self._require(RequestState.validating)
        return [n for n, s in self.confirmers.items() if s == ConfirmerState.pending]

    def resend(self, nic: str, known_accounts: Collection[str]) -> Decision:
        """New codes for the confirmers who have not answered; the old ones stop working.
        Refused while one of them has no account to mail it to."""
        pending = self.check_resend(nic)
        if refusal := _cannot_resend(pending, known_accounts):
            raise refusal
        return Decision(self, (CodesAsked(tuple(pending), resent_by=nic),))

    # --- a support agent's actions: never an answer for anyone, never a contact changed directly ---

    def cancel_by_support(self, agent: str, reason: str) -> Decision:
        """An agent ends an open request, as its requester could, saying why (the parties are told)."""
        reason = support_reason(reason)
        self._require(RequestState.checking, RequestState.validating)
        acted = SupportActed(agent, "cancel", reason)
        return self._moved(RequestState.cancelled, support_actor(agent), f"cancelled by support: {reason}", acted)

    def unlock(self, agent: str, nic: str, reason: str, *, locked: bool) -> Decision:
        """An agent lets a confirmer whose code is `locked` (too many wrong tries: `tokens`) use
        it again."""
        reason = support_reason(reason)
        if nic not in self.confirmers:
            raise Refusal(Kind.not_found, "Not a confirmer", _l("%(nic)s is not asked to confirm this request.", nic=nic), field="nic")
        self._require(RequestState.validating)
        if self.confirmers[nic] != ConfirmerState.pending:
            raise Refusal(Kind.conflict, "Already answered", _l("%(nic)s has answered this request already.", nic=nic))
        if not locked:
            raise Refusal(Kind.conflict, "Not locked", _l("The validation code of %(nic)s is not locked: nothing to unlock.", nic=nic))
        return Decision(self, (CodeUnlocked(nic, support_actor(agent), reason), SupportActed(agent, "unlock", reason, nic)))

    def resend_by_support(self, agent: str, reason: str, known_accounts: Collection[str]) -> Decision:
        """An agent has new codes sent to the confirmers who have not answered (the old ones stop
        working); refused while one of them has no account to mail it to."""
        reason = support_reason(reason)
        self._require(RequestState.validating)
        pending = tuple(n for n, s in self.confirmers.items() if s == ConfirmerState.pending)
        if refusal := _cannot_resend(pending, known_accounts):
            raise refusal
        asked = CodesAsked(pending, resent_by=support_actor(agent), why=reason)
        return Decision(self, (asked, SupportActed(agent, "resend", reason)))

    def awaited_vetting(self) -> Phase | None:
        """The billing check's verdict this request waits for, if any (to ask for it again)."""
        return {RequestState.checking: Phase.submit, RequestState.applying: Phase.apply}.get(self.state)

    def ask_vetting_again(self) -> Decision | None:
        """The verdict is late (its message may have been dead-lettered during an outage): the
        billing check is asked again; None if the request no longer waits for one."""
        phase = self.awaited_vetting()
        return Decision(self, (VettingAsked(phase, again=True),)) if phase else None

    def time_is_up(self) -> Decision | None:
        """The request's time ran out: how it ends, by the state it was stuck in (None if closed).
        Waiting for confirmers it expires; waiting for the billing check it expires before
        anyone was asked, and fails once everyone had accepted (the change was due)."""
        if self.state == RequestState.validating:
            return self._moved(RequestState.expired, "system", "not confirmed in time")
        if self.state == RequestState.checking:
            return self._moved(RequestState.expired, "system", "the billing check did not answer in time")
        if self.state == RequestState.applying:
            return self._moved(RequestState.failed, "system", "the billing check did not answer in time to apply the change")
        return None

    def not_reached(self, nic: str, kind: str, smtp_code: int) -> Decision:
        """The notifier gave up an email to `nic`: the history says so."""
        return Decision(self, (NotReached(nic, kind, smtp_code),))


@dataclass(frozen=True)
class Decision:
    """What an operation decided: the request as it now is, and what happened, in order."""

    change: ContactChange
    events: tuple[Event, ...]

    @property
    def state(self) -> RequestState:
        return self.change.state

    @property
    def moved(self) -> StateChanged | None:
        """The state change among the events, if the request moved."""
        return next((e for e in self.events if isinstance(e, StateChanged)), None)


def _accounts_gone(nics: Iterable[str], known_accounts: Collection[str]) -> str | None:
    """Why codes cannot be mailed to `nics` (an account gone), or None: the reason recorded."""
    missing = [nic for nic in nics if nic not in known_accounts]
    return f"the account {', '.join(missing)} no longer exists" if missing else None


def _cannot_resend(nics: Iterable[str], known_accounts: Collection[str]) -> Refusal | None:
    """The refusal of codes that cannot be mailed to `nics` (an account gone), or None."""
    missing = [nic for nic in nics if nic not in known_accounts]
    if not missing:
        return None
    words = _l("The validation codes cannot be sent: the account %(nics)s no longer exists.", nics=", ".join(missing))
    return Refusal(Kind.conflict, "Cannot resend", words)

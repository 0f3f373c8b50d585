"""The rules of contact changes (spec sections 2 to 4), pure: no I/O, no clock of its own.

`plan_submission` decides who may ask for what and who must confirm; `ContactChange` is the
state machine of one request; `tokens.check_token` decides whether a presented validation code
is good. Handlers load the facts, call these, and store what they return.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from contacts_shared.contracts import ContactType, Phase, RequestState

OPEN_STATES = frozenset({RequestState.checking, RequestState.validating, RequestState.applying})
FINAL_STATES = frozenset(RequestState) - OPEN_STATES
# The states in which a request waits for the billing check's verdict (at submission, before applying).
WAITING_FOR_VETTING = frozenset({RequestState.checking, RequestState.applying})

ROLE_NAMES = {ContactType.admin: "administrative", ContactType.tech: "technical", ContactType.billing: "billing"}


# --- facts the rules look at ------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    nic: str
    email: str
    zone: str


@dataclass(frozen=True)
class ServiceContacts:
    service: str
    admin: str
    tech: str
    billing: str

    def holder(self, ctype: ContactType) -> str:
        return getattr(self, ctype.value)

    def roles_of(self, nic: str) -> list[ContactType]:
        return [t for t in ContactType if self.holder(t) == nic]


# --- refusals ---------------------------------------------------------------------------------


class Kind(StrEnum):
    """What sort of refusal: the web layer answers each with its HTTP status."""

    not_found = "not_found"  # no such thing among what the NIC is party to
    forbidden = "forbidden"  # a party, but not one the rule lets do this
    conflict = "conflict"  # not in the state it needs to be (another request open, already ended)
    invalid = "invalid"  # what was given breaks a rule (unknown NIC, other zone, bad code)
    too_many = "too_many"  # over a rate limit


@dataclass
class Refusal(Exception):
    """A submission or action the rules refuse, of a kind, with words for the person asking."""

    kind: Kind
    title: str
    detail: str
    field: str | None = None
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail


def not_found() -> Refusal:
    # One answer for "does not exist" and "not yours": never reveal what a NIC is not party to.
    return Refusal(Kind.not_found, "Not found", "No such service or request among those you are a contact of.")


# --- who may ask for what (section 2) ---------------------------------------------------------


@dataclass(frozen=True)
class PlannedChange:
    type: ContactType
    from_: str
    to: str
    confirmers: tuple[str, ...]


def plan_submission(
    requester: str,
    service: ServiceContacts | None,
    changes: Mapping[ContactType, str],
    accounts: Mapping[str, Account],
    open_requests: Mapping[ContactType, str],
) -> list[PlannedChange]:
    """Validate a whole submission (all or nothing) and return one planned change per type.

    `accounts` holds the known accounts among (at least) the requester and the new NICs;
    `open_requests` maps a type to the id of its open request on this service.
    """
    if service is None or not service.roles_of(requester):
        raise not_found()
    if not changes:
        raise Refusal(Kind.invalid, "Nothing to change", "Name at least one of admin, tech or billing.", field="body")
    plans = [_plan_one(requester, service, ctype, new, accounts) for ctype, new in changes.items()]
    for plan in plans:
        if plan.type in open_requests:
            raise Refusal(
                Kind.conflict,
                "A request is already open",
                f"A change of the {ROLE_NAMES[plan.type]} contact of this service is already under way; "
                "wait for it to finish or cancel it.",
                field=plan.type.value,
                extra={"open_request_id": open_requests[plan.type]},
            )
    return plans


def check_may_change(requester: str, service: ServiceContacts, ctype: ContactType) -> None:
    """Refused unless `requester` may ask to change this contact type of the service, whoever
    the new contact: the administrative contact changes any, another contact only itself."""
    roles = service.roles_of(requester)
    if not roles:
        raise not_found()
    if ContactType.admin not in roles and ctype not in roles:
        mine = " and ".join(ROLE_NAMES[r] for r in roles)
        raise Refusal(
            Kind.forbidden,
            "Not allowed",
            f"As {mine} contact you may only replace yourself; "
            f"the {ROLE_NAMES[ctype]} contact can be changed by the administrative contact.",
            field=ctype.value,
        )


def refusal_to_change(requester: str, service: ServiceContacts, ctype: ContactType) -> str | None:
    """Why `requester` may not change this contact type (the words shown), or None when it may."""
    return _refused(check_may_change, requester, service, ctype)


def _refused(check: Callable[..., object], *args: object) -> str | None:
    """The words of the refusal `check(*args)` raises, or None when it passes."""
    try:
        check(*args)
    except Refusal as refusal:
        return refusal.detail
    return None


def _plan_one(
    requester: str, service: ServiceContacts, ctype: ContactType, new: str, accounts: Mapping[str, Account]
) -> PlannedChange:
    check_may_change(requester, service, ctype)
    current = service.holder(ctype)
    if new not in accounts:
        raise Refusal(Kind.invalid, "Unknown NIC handle", f"{new} is not a known customer account.", field=ctype.value)
    if new == current:
        raise Refusal(
            Kind.invalid, "Nothing to change", f"{new} is already the {ROLE_NAMES[ctype]} contact of this service.", field=ctype.value
        )
    mine = accounts.get(requester)
    if mine is None:
        raise Refusal(Kind.invalid, "Unknown account", "Your customer account is not known here yet; try again shortly.", field=ctype.value)
    if mine.zone != accounts[new].zone:
        raise Refusal(
            Kind.invalid,
            "Different zone",
            f"{new} belongs to another geographical zone; contacts can only be managed between accounts of the same zone.",
            field=ctype.value,
        )
    # The requester always confirms; the new contact too unless it is the requester (take over).
    confirmers = (requester,) if new == requester else (requester, new)
    return PlannedChange(type=ctype, from_=current, to=new, confirmers=confirmers)


def may_view(nic: str, requester: str, from_: str, to: str) -> bool:
    return nic in (requester, from_, to)


# --- life of a request (section 3) ------------------------------------------------------------


class ConfirmerState:
    pending = "pending"
    accepted = "accepted"
    declined = "declined"


@dataclass(frozen=True)
class Transition:
    state: RequestState
    actor: str
    reason: str | None = None


@dataclass(frozen=True)
class ContactChange:
    """One request as the state machine sees it."""

    id: str
    service: str
    type: ContactType
    from_: str
    to: str
    requester: str
    state: RequestState
    confirmers: Mapping[str, str]  # nic -> ConfirmerState
    expires_at: datetime | None = None  # as stored (when it is known)

    def _require(self, *states: RequestState) -> None:
        if self.state not in states:
            raise Refusal(
                Kind.conflict,
                "Request not open for this",
                f"This request is {self.state.value}; it can no longer be changed that way.",
                extra={"state": self.state.value},
            )

    def vetted(self, phase: str, approved: bool, reasons: list[str]) -> Transition | None:
        """The billing check answered; None when the answer is stale (request moved on)."""
        if phase == "submit":
            if self.state != RequestState.checking:
                return None
            if approved:
                return Transition(RequestState.validating, "billing-check")
            return Transition(RequestState.rejected, "billing-check", "; ".join(reasons) or "refused by the billing check")
        if self.state != RequestState.applying:
            return None
        if approved:
            return Transition(RequestState.done, "system")
        return Transition(RequestState.failed, "billing-check", "; ".join(reasons) or "refused by the billing check")

    def check_answerable(self, nic: str) -> None:
        """Refused unless `nic` may answer now, whatever the code: a party not asked to confirm,
        a request no longer waiting for answers, a confirmer who has answered already."""
        if nic not in self.confirmers:
            raise Refusal(Kind.forbidden, "Not asked to confirm", "You are informed of this request but not asked to confirm it.")
        self._require(RequestState.validating)
        if self.confirmers[nic] != ConfirmerState.pending:
            # The code was used: refused like any invalid one (spec 4: one generic message).
            raise invalid_token()

    def answer(self, nic: str, accept: bool) -> tuple[ContactChange, Transition | None]:
        """A confirmer accepts or declines (token already checked)."""
        self.check_answerable(nic)
        new_state = ConfirmerState.accepted if accept else ConfirmerState.declined
        confirmers = {**self.confirmers, nic: new_state}
        changed = replace(self, confirmers=confirmers)
        if not accept:
            return replace(changed, state=RequestState.declined), Transition(RequestState.declined, nic, f"declined by {nic}")
        if all(s == ConfirmerState.accepted for s in confirmers.values()):
            return replace(changed, state=RequestState.applying), Transition(RequestState.applying, nic, "all confirmers accepted")
        return changed, None

    def cancel(self, nic: str) -> Transition:
        if nic != self.requester:
            raise Refusal(Kind.forbidden, "Not allowed", "Only the requester can cancel a request.")
        self._require(RequestState.checking, RequestState.validating)
        return Transition(RequestState.cancelled, nic, f"cancelled by {nic}")

    def may_answer(self, nic: str) -> bool:
        return _refused(self.check_answerable, nic) is None

    def may_resend(self, nic: str) -> bool:
        return _refused(self.check_resend, nic) is None

    def may_cancel(self, nic: str) -> bool:
        return _refused(self.cancel, nic) is None

    def check_resend(self, nic: str) -> list[str]:
        """Who gets a new token on resend: the confirmers who have not answered. Only the
        requester and the confirmers may ask (spec 4); the previous contact only looks on."""
        if not may_view(nic, self.requester, self.from_, self.to):
            raise not_found()
        if nic != self.requester and nic not in self.confirmers:
            raise Refusal(Kind.forbidden, "Not allowed", "Only the requester and the confirmers can ask for new validation codes.")
        self._require(RequestState.validating)
        return [n for n, s in self.confirmers.items() if s == ConfirmerState.pending]

    def awaited_vetting(self) -> Phase | None:
        """The billing check's verdict this request waits for, if any (to ask for it again)."""
        return {RequestState.checking: Phase.submit, RequestState.applying: Phase.apply}.get(self.state)

    def time_is_up(self) -> Transition | None:
        """The request's time ran out: how it ends, by the state it was stuck in (None if closed).
        Waiting for confirmers it expires; waiting for the billing check it expires before
        anyone was asked, and fails once everyone had accepted (the change was due)."""
        if self.state == RequestState.validating:
            return Transition(RequestState.expired, "system", "not confirmed in time")
        if self.state == RequestState.checking:
            return Transition(RequestState.expired, "system", "the billing check did not answer in time")
        if self.state == RequestState.applying:
            return Transition(RequestState.failed, "system", "the billing check did not answer in time to apply the change")
        return None

    def apply_outcome(self, approved: bool, reasons: list[str], current_holder: str | None) -> Transition | None:
        """The apply-phase check answered: apply only if still approved and nobody moved the holder."""
        transition = self.vetted("apply", approved, reasons)
        if transition is None or transition.state != RequestState.done:
            return transition
        if current_holder is None:
            return Transition(RequestState.failed, "system", "the service no longer exists")
        if current_holder != self.from_:
            return Transition(
                RequestState.failed, "system", f"the {ROLE_NAMES[self.type]} contact changed meanwhile (now {current_holder})"
            )
        return transition


# --- tokens (section 4; the code itself is checked in `tokens`) ----------------------------------


def unreachable(nic: str, kind: str, smtp_code: int) -> str:
    """The history's note that an email to `nic` was given up (the mail server's words may hold
    the address, which the other parties must not see: only its reply code)."""
    what = "validation code" if kind == "token" else "outcome"
    note = f"{nic} could not be reached: the mail server refused the {what} email for good ({smtp_code})"
    if kind == "token":
        note += "; once their email address is corrected, ask for new codes (Resend), or cancel the request"
    return note


def invalid_token() -> Refusal:
    return Refusal(
        Kind.invalid,
        "Invalid validation code",
        "This validation code is not valid for you on this request: it may be mistyped, already used, expired or "
        "locked after too many tries. Use Resend to get a new one.",
        field="token",
    )

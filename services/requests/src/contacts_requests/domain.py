"""The rules of contact changes (spec sections 2 to 4), pure: no I/O, no clock of its own.

`plan_submission` decides who may ask for what and who must confirm; `contact_change.ContactChange`
is the state machine of one request; `tokens.check_token` decides whether a presented
validation code is good. Handlers load the facts, call these, and save what they decide through
the unit of work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from contacts_shared.contracts import ContactType, RequestState
from contacts_shared.i18n import _l, listed
from contacts_shared.wording import role_text

OPEN_STATES = frozenset({RequestState.checking, RequestState.validating, RequestState.applying})
FINAL_STATES = frozenset(RequestState) - OPEN_STATES
# The states in which a request waits for the billing check's verdict (at submission, before applying).
WAITING_FOR_VETTING = frozenset({RequestState.checking, RequestState.applying})



# --- facts the rules look at ------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    nic: str
    email: str
    zone: str
    language: str = "en"  # BCP 47: what the account reads its emails and pages in


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
    """A submission or action the rules refuse, of a kind, with words for the person asking.

    The `detail` is English wherever it is a `str` (the JSON API, the logs); made with `_l`, the
    pages show it in their reader's language (contacts_shared.i18n)."""

    kind: Kind
    title: str
    detail: str
    field: str | None = None
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail


def not_found() -> Refusal:
    # One answer for "does not exist" and "not yours": never reveal what a NIC is not party to.
    return Refusal(Kind.not_found, "Not found", _l("No such service or request among those you are a contact of."))


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
        raise Refusal(Kind.invalid, "Nothing to change", _l("Name at least one of admin, tech or billing."), field="body")
    plans = [_plan_one(requester, service, ctype, new, accounts) for ctype, new in changes.items()]
    for plan in plans:
        if plan.type in open_requests:
            raise Refusal(
                Kind.conflict,
                "A request is already open",
                _l(
                    "A change of the %(role)s contact of this service is already under way; wait for it to finish or cancel it.",
                    role=role_text(plan.type),
                ),
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
        raise Refusal(
            Kind.forbidden,
            "Not allowed",
            _l(
                "As %(mine)s contact you may only replace yourself; the %(role)s contact can be changed by the administrative contact.",
                mine=listed(role_text(r) for r in roles),
                role=role_text(ctype),
            ),
            field=ctype.value,
        )


def refusal_to_change(requester: str, service: ServiceContacts, ctype: ContactType) -> str | None:
    """Why `requester` may not change this contact type (the words shown), or None when it may."""
    return refused(check_may_change, requester, service, ctype)


def refused(check: Callable[..., object], *args: object) -> str | None:
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
        raise Refusal(Kind.invalid, "Unknown NIC handle", _l("%(nic)s is not a known customer account.", nic=new), field=ctype.value)
    if new == current:
        raise Refusal(
            Kind.invalid,
            "Nothing to change",
            _l("%(nic)s is already the %(role)s contact of this service.", nic=new, role=role_text(ctype)),
            field=ctype.value,
        )
    mine = accounts.get(requester)
    if mine is None:
        raise Refusal(Kind.invalid, "Unknown account", _l("Your customer account is not known here yet; try again shortly."), field=ctype.value)
    if mine.zone != accounts[new].zone:
        raise Refusal(
            Kind.invalid,
            "Different zone",
            _l("%(nic)s belongs to another geographical zone; contacts can only be managed between accounts of the same zone.", nic=new),
            field=ctype.value,
        )
    # The requester always confirms; the new contact too unless it is the requester (take over).
    confirmers = (requester,) if new == requester else (requester, new)
    return PlannedChange(type=ctype, from_=current, to=new, confirmers=confirmers)


@dataclass(frozen=True)
class ReminderSchedule:
    """When confirmers who have not answered are reminded: `after` the request, and
    `before_expiry`; at most `most` times."""

    after: timedelta
    before_expiry: timedelta
    most: int

    def moments(self, created_at: datetime, expires_at: datetime) -> tuple[datetime, ...]:
        """The reminders of a request, in order: those that fall while it is open, one per moment."""
        wanted = {created_at + self.after, expires_at - self.before_expiry}
        return tuple(sorted(m for m in wanted if created_at < m < expires_at))[: self.most]


def told_beforehand(requester: str, from_: str, admin: str | None, confirmers: Collection[str]) -> tuple[str, ...]:
    """Who hears of a request when its codes are sent, though nobody asks them anything, so
    that no change comes as a surprise: the contact being replaced, when someone else asked (an
    admin replacing the technical or billing contact), and the service's admin, when its
    technical or billing contact hands over."""
    told: list[str] = []
    for nic in (from_, admin):
        if nic and nic != requester and nic not in confirmers and nic not in told:
            told.append(nic)
    return tuple(told)


def may_view(nic: str, requester: str, from_: str, to: str) -> bool:
    return nic in (requester, from_, to)


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
        _l(
            "This validation code is not valid for you on this request: it may be mistyped, already used, expired or "
            "locked after too many tries. Use Resend to get a new one."
        ),
        field="token",
    )


# --- support agents (what they may do is in `contact_change`) ----------------------------------

# The longest reason an agent may give; it goes in the history, the emails and the bus.
MAX_REASON_CHARS = 500


def support_actor(agent: str) -> str:
    """How an agent's actions are signed in the history: apart from the customers' NICs."""
    return f"support:{agent}"


def support_reason(reason: str) -> str:
    """An agent's reason, trimmed; every action of theirs needs one, to be read by customers and
    auditors."""
    reason = " ".join(reason.split())
    if not reason:
        raise Refusal(Kind.invalid, "Reason needed", _l("Say why: the reason is written in the request's history."), field="reason")
    if len(reason) > MAX_REASON_CHARS:
        raise Refusal(Kind.invalid, "Reason too long", _l("Keep the reason under %(count)s characters.", count=MAX_REASON_CHARS), field="reason")
    return reason


# --- batches (issue 20) ------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchMember:
    """A request of a batch as the batch's codes need it: its state and who still has to answer."""

    request_id: str
    state: RequestState
    waiting_for: tuple[str, ...]


def batch_codes_due(members: Collection[BatchMember], codes_asked: bool) -> dict[str, list[str]] | None:
    """Whom a batch's codes go to, once: each confirmer and the requests of the batch waiting for
    them; None while a request is still being checked (the codes of a batch leave together) or
    when they went already. Requests refused or ended meanwhile are left out."""
    if codes_asked or any(m.state == RequestState.checking for m in members):
        return None
    due: dict[str, list[str]] = {}
    for member in members:
        if member.state == RequestState.validating:
            for nic in member.waiting_for:
                due.setdefault(nic, []).append(member.request_id)
    return due

"""What happens to a request, as the domain records it. Each operation of `ContactChange`
returns a `Decision`: the request as it now is and these events, in order. The unit of work
writes each (the state, the history line, the replica) and queues the messages that announce
it, all in one transaction (`unit_of_work`); the order of the events is the order of the
messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contacts_shared.contracts import Phase, RequestState


@dataclass(frozen=True)
class Submitted:
    """The request exists, in `checking`, with its confirmers; its history starts with the
    requester's submission."""

    requester: str


@dataclass(frozen=True)
class StateChanged:
    """The request moved to `state`, by `actor`, for `reason`; every party is told."""

    state: RequestState
    actor: str
    reason: str | None = None


@dataclass(frozen=True)
class Answered:
    """A confirmer accepted or declined; their code is spent."""

    nic: str
    accepted: bool


@dataclass(frozen=True)
class CodeRefused:
    """A wrong, expired or spent code was presented: one more failure counted against it."""

    nic: str


@dataclass(frozen=True)
class VettingAsked:
    """The billing check is asked for its verdict (`again`: after waiting too long for it)."""

    phase: Phase
    again: bool = False


@dataclass(frozen=True)
class CodesAsked:
    """The notifier is asked to mail codes to `nics` (`resent_by`: a new round, the old codes
    stop working)."""

    nics: tuple[str, ...]
    resent_by: str | None = None
    told: tuple[str, ...] = ()  # a heads-up, no code: see domain.told_beforehand
    reminder: bool = False  # the new round is a reminder (resent_by "system")
    why: str | None = None  # a support agent's reason for the new round


@dataclass(frozen=True)
class ReminderPlanned:
    """`sent` reminders so far; the next is due `at` (None: no more)."""

    sent: int
    at: datetime | None


@dataclass(frozen=True)
class ContactReplaced:
    """The change is applied: the service's contact is the new one."""


@dataclass(frozen=True)
class CodeUnlocked:
    """A code locked after too many wrong tries works again (its failures forgotten), by `actor`
    for `reason`."""

    nic: str
    actor: str
    reason: str


@dataclass(frozen=True)
class SupportActed:
    """A support agent acted on the request (`action`: cancel, unlock or resend; `confirmer`:
    whose code was unlocked), for `reason`: announced to other systems."""

    agent: str
    action: str
    reason: str
    confirmer: str | None = None


@dataclass(frozen=True)
class NotReached:
    """The notifier gave up an email to `nic` for good (`kind`: token or outcome)."""

    nic: str
    kind: str
    smtp_code: int


Event = (
    Submitted
    | StateChanged
    | Answered
    | CodeRefused
    | VettingAsked
    | CodesAsked
    | ReminderPlanned
    | ContactReplaced
    | NotReached
    | CodeUnlocked
    | SupportActed
)

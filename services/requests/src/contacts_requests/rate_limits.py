"""How often one person may make the service send email: the rules (pure; the counts they judge
are kept in PostgreSQL, so they hold across replicas).

Every resend and submission mails codes to other people: unlimited, the API would be a way to
flood someone's mailbox from our servers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from contacts_shared.i18n import Text, _l

from contacts_requests.domain import Kind, Refusal

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class RateLimits:
    """The limits (settings CONTACTS_RESEND_INTERVAL, _RESENDS_PER_REQUEST, _SUBMISSIONS_PER_HOUR)."""

    resend_interval: timedelta = timedelta(minutes=1)
    resends_per_request: int = 5
    submissions_per_hour: int = 30


def too_many(detail: Text, retry_after: timedelta) -> Refusal:
    """Over a limit, with the seconds to wait (the API sends them as `Retry-After` too)."""
    seconds = max(1, math.ceil(retry_after.total_seconds()))
    words = _l("%(detail)s Try again in %(seconds)s s.", detail=detail, seconds=seconds)
    return Refusal(Kind.too_many, "Too many requests", words, extra={"retry_after": str(seconds)})


def check_resend(limits: RateLimits, *, resends: int, last_resend_at: datetime | None, expires_at: datetime, now: datetime) -> None:
    """A first resend is always allowed; then at most one per interval, and so many per request
    (after which waiting is no use: the wait given is what the request has left)."""
    if resends == 0 or last_resend_at is None:
        return
    if resends >= limits.resends_per_request:
        raise too_many(_l("The codes of this request were already sent again %(count)s times, the most allowed.", count=resends), expires_at - now)
    wait = last_resend_at + limits.resend_interval - now
    if wait > timedelta(0):
        interval = format(limits.resend_interval.total_seconds(), "g")
        raise too_many(_l("The codes were sent again less than %(seconds)s s ago.", seconds=interval), wait)


def check_submission(limits: RateLimits, *, recent: list[datetime], now: datetime) -> None:
    """At most so many submissions an hour per requester; `recent` are the times of theirs in
    the last hour."""
    if len(recent) >= limits.submissions_per_hour:
        raise too_many(
            _l("At most %(count)s submissions an hour are accepted from one person.", count=limits.submissions_per_hour), min(recent) + HOUR - now
        )

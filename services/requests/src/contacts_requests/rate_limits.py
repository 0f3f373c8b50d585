"""How often one person may make the service send email: the rules (pure; the counts they judge
are kept in PostgreSQL, so they hold across replicas).

Every resend and submission mails codes to other people: unlimited, the API would be a way to
flood someone's mailbox from our servers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from contacts_requests.domain import Kind, Refusal

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class RateLimits:
    """The limits (settings CONTACTS_RESEND_INTERVAL, _RESENDS_PER_REQUEST, _SUBMISSIONS_PER_HOUR)."""

    resend_interval: timedelta = timedelta(minutes=1)
    resends_per_request: int = 5
    submissions_per_hour: int = 30


def too_many(detail: str, retry_after: timedelta) -> Refusal:
    """Over a limit, with the seconds to wait (the API sends them as `Retry-After` too)."""
    seconds = max(1, math.ceil(retry_after.total_seconds()))
    return Refusal(Kind.too_many, "Too many requests", f"{detail} Try again in {seconds} s.", extra={"retry_after": str(seconds)})


def check_resend(limits: RateLimits, *, resends: int, last_resend_at: datetime | None, expires_at: datetime, now: datetime) -> None:
    """A first resend is always allowed; then at most one per interval, and so many per request
    (after which waiting is no use: the wait given is what the request has left)."""
    if resends == 0 or last_resend_at is None:
        return
    if resends >= limits.resends_per_request:
        raise too_many(f"The codes of this request were already sent again {resends} times, the most allowed.", expires_at - now)
    wait = last_resend_at + limits.resend_interval - now
    if wait > timedelta(0):
        raise too_many(f"The codes were sent again less than {limits.resend_interval.total_seconds():g} s ago.", wait)


def check_submission(limits: RateLimits, *, recent: list[datetime], now: datetime) -> None:
    """At most so many submissions an hour per requester; `recent` are the times of theirs in
    the last hour."""
    if len(recent) >= limits.submissions_per_hour:
        raise too_many(f"At most {limits.submissions_per_hour} submissions an hour are accepted from one person.", min(recent) + HOUR - now)

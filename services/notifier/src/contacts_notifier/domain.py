"""Who is told what, and in which words (spec sections 4 and 7). Pure: no I/O.

Emails are plain text rendered from Jinja2 templates; the token is a parameter of the
rendering and is never stored: it is derived, when its email is written, from the notifier's
secret key and what identifies it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from contacts_shared.contracts import (
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    RequestState,
    hash_token,
)
from contacts_shared.wording import ROLE_NAMES, display_time
from jinja2 import Environment, PackageLoader, StrictUndefined

_templates = Environment(
    loader=PackageLoader("contacts_notifier", "templates"),
    undefined=StrictUndefined,
    autoescape=False,  # plain-text emails
    keep_trailing_newline=True,
)


def validation_code(key: bytes, request_id: str, nic: str, generation: int) -> tuple[str, str]:
    """The validation code of `nic` for the `generation`-th round of codes of a request (256
    bits, URL-safe), and the hash that is all we keep of it.

    Derived (HMAC-SHA256 under the secret key), not drawn at random: an email written again
    (after a crash between SMTP and the commit, an SMTP failure, a replayed message) carries the
    same code, so no copy a mailbox kept ever holds a dead one; a resend is a new generation,
    hence a new code. Without the key the code cannot be computed from what is stored."""
    message = "\x00".join(("contacts validation code", request_id, nic, str(generation))).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    token = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return token, hash_token(token)


def token_expiry(request_expires_at: datetime, now: datetime, token_ttl_seconds: float) -> datetime:
    """A token expires with its request, and at the latest after the token TTL."""
    return min(request_expires_at, now + timedelta(seconds=token_ttl_seconds))


# An email that could not be sent is tried again after 0.2 s, doubling up to this.
MAX_RETRY_DELAY = 5.0


def retry_delay(attempts: int) -> float:
    """Seconds before the next try of an email that failed `attempts` times before this one."""
    return min(0.2 * 2 ** min(attempts, 10), MAX_RETRY_DELAY)


def confirm_link(public_url: str, request_id: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/requests/{quote(request_id)}?token={quote(token)}"


@dataclass(frozen=True)
class Recipient:
    nic: str
    email: str


def outcome_recipients(event: ContactChangeStateChanged) -> list[Recipient]:
    """Who hears about a new state (section 7); empty when the state mails nobody."""
    roles_for_state: dict[RequestState, tuple[str, ...]] = {
        RequestState.rejected: ("requester",),
        # The confirmers are the requester and the new contact.
        RequestState.declined: ("requester", "to"),
        RequestState.cancelled: ("requester", "to"),
        RequestState.expired: ("requester", "to"),
        RequestState.failed: ("requester", "to"),
        RequestState.done: ("requester", "to", "from"),
    }
    wanted = roles_for_state.get(event.state, ())
    seen: set[str] = set()
    recipients = []
    for role in wanted:
        for party in event.parties:
            if party.role == role and party.nic not in seen:
                seen.add(party.nic)
                recipients.append(Recipient(party.nic, party.email))
    return recipients


@dataclass(frozen=True)
class Email:
    subject: str
    body: str


def token_email(
    *,
    request_id: str,
    service: str,
    ctype: str,
    from_: str,
    to: str,
    requester: str,
    recipient: str,
    token: str,
    link: str,
    expires_at: datetime,
    reminder: bool = False,
) -> Email:
    context = {
        "reminder": reminder,
        "request_id": request_id,
        "service": service,
        "role": ROLE_NAMES.get(ctype, ctype),
        "from_": from_,
        "to": to,
        "requester": requester,
        "recipient": recipient,
        "token": token,
        "link": link,
        "expires_at": display_time(expires_at),
    }
    subject = f"Please confirm: new {context['role']} contact for {service}"
    return Email(
        subject=f"Reminder: p{subject[1:]}" if reminder else subject,
        body=_templates.get_template("token.txt").render(context),
    )


def heads_up_email(event: ContactChangeValidationRequested, recipient: str) -> Email:
    """A heads-up to someone told of a request though not asked anything (no code)."""
    role = ROLE_NAMES.get(event.type.value, event.type.value)
    context = {
        "request_id": str(event.request_id),
        "service": event.service,
        "role": role,
        "from_": event.from_,
        "to": event.to,
        "requester": event.requester,
        "recipient": recipient,
        "confirmers": " and ".join(c.nic for c in event.confirmers),
        "expires_at": display_time(event.expires_at),
    }
    return Email(
        subject=f"Heads-up: {event.to} to become the {role} contact of {event.service}",
        body=_templates.get_template("heads_up.txt").render(context),
    )


OUTCOME_SUBJECTS = {
    RequestState.rejected: "Contact change refused for {service}",
    RequestState.declined: "Contact change declined for {service}",
    RequestState.cancelled: "Contact change cancelled for {service}",
    RequestState.expired: "Contact change expired for {service}",
    RequestState.failed: "Contact change failed for {service}",
    RequestState.done: "Contact change done for {service}",
}


def outcome_email(event: ContactChangeStateChanged, recipient: str) -> Email:
    context = {
        "request_id": str(event.request_id),
        "service": event.service,
        "role": ROLE_NAMES.get(event.type.value, event.type.value),
        "from_": event.from_,
        "to": event.to,
        "state": event.state.value,
        "reason": event.reason,
        "recipient": recipient,
    }
    return Email(
        subject=OUTCOME_SUBJECTS[event.state].format(service=event.service),
        body=_templates.get_template(f"{event.state.value}.txt").render(context),
    )

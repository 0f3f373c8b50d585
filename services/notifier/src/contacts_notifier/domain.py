"""Who is told what, and in which words (spec sections 4 and 7). Pure: no I/O.

Emails are plain text rendered from Jinja2 templates; the token is a parameter of the
rendering and is never stored: it is derived, when its email is written, from the notifier's
secret key and what identifies it.
"""

from __future__ import annotations

import base64
import functools
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
from contacts_shared.i18n import (
    N_,
    SOURCE_LANGUAGE,
    _l,
    _ln,
    joined,
    supported,
    translate,
)
from contacts_shared.i18n_templates import environment
from contacts_shared.wording import display_time, role_name
from jinja2 import Environment, PackageLoader


@functools.cache
def templates(language: str) -> Environment:
    """The emails' templates, written in `language` (one of `i18n.languages()`): plain text, each
    message's line breaks as its catalog writes them."""
    return environment(PackageLoader("contacts_notifier", "templates"), language, autoescape=False, keep_trailing_newline=True)


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
    language: str = SOURCE_LANGUAGE  # their account's (a BCP 47 tag)


# Who hears about each state that is mailed about (section 7); the other states mail nobody.
ROLES_FOR_STATE: dict[RequestState, tuple[str, ...]] = {
    RequestState.rejected: ("requester",),
    # The confirmers are the requester and the new contact.
    RequestState.declined: ("requester", "to"),
    RequestState.cancelled: ("requester", "to"),
    RequestState.expired: ("requester", "to"),
    RequestState.failed: ("requester", "to"),
    RequestState.done: ("requester", "to", "from"),
}


def outcome_recipients(event: ContactChangeStateChanged) -> list[Recipient]:
    """Who hears about a new state (section 7); empty when the state mails nobody."""
    wanted = ROLES_FOR_STATE.get(event.state, ())
    seen: set[str] = set()
    recipients = []
    for role in wanted:
        for party in event.parties:
            if party.role == role and party.nic not in seen:
                seen.add(party.nic)
                recipients.append(Recipient(party.nic, party.email, party.language))
    return recipients


@dataclass(frozen=True)
class Email:
    subject: str
    body: str
    language: str = SOURCE_LANGUAGE  # what it is written in (its Content-Language)


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
    language: str = SOURCE_LANGUAGE,
) -> Email:
    """The email with a confirmer's code, in `language` (their account's; the nearest there is)."""
    language = supported(language)
    context = {
        "reminder": reminder,
        "request_id": request_id,
        "service": service,
        "role": role_name(ctype, language),
        "from_": from_,
        "to": to,
        "requester": requester,
        "recipient": recipient,
        "token": token,
        "link": link,
        "expires_at": display_time(expires_at, language),
    }
    words = {"role": context["role"], "service": service}
    subject = (
        _l("Reminder: please confirm: new %(role)s contact for %(service)s", **words)
        if reminder
        else _l("Please confirm: new %(role)s contact for %(service)s", **words)
    )
    return Email(
        subject=subject.translated(language),
        body=templates(language).get_template("token.txt").render(context),
        language=language,
    )


def batch_link(public_url: str, batch_id: str, token: str) -> str:
    """The batch's page, with the code filled in: the code answers all its requests at once."""
    return f"{public_url.rstrip('/')}/batches/{quote(batch_id)}?token={quote(token)}"


def batch_token_email(
    *,
    batch_id: str,
    items: list[dict[str, str]],
    requester: str,
    recipient: str,
    token: str,
    link: str,
    expires_at: datetime,
    language: str = SOURCE_LANGUAGE,
) -> Email:
    """One email to a confirmer for every request of a batch waiting for them, with one code, in
    `language`."""
    language = supported(language)
    shown = [{**item, "role": role_name(item["type"], language), "from_": item["from"]} for item in items]
    context = {"batch_id": batch_id, "items": shown, "requester": requester, "recipient": recipient, "token": token, "link": link}
    subject = _ln(
        "Please confirm: %(count)s contact change asked by %(requester)s",
        "Please confirm: %(count)s contact changes asked by %(requester)s",
        len(items),
        requester=requester,
    )
    return Email(
        subject=subject.translated(language),
        body=templates(language).get_template("batch_token.txt").render(context, expires_at=display_time(expires_at, language)),
        language=language,
    )


def heads_up_email(event: ContactChangeValidationRequested, recipient: str, language: str = SOURCE_LANGUAGE) -> Email:
    """A heads-up to someone told of a request though not asked anything (no code), in `language`."""
    language = supported(language)
    role = role_name(event.type.value, language)
    context = {
        "request_id": str(event.request_id),
        "service": event.service,
        "role": role,
        "from_": event.from_,
        "to": event.to,
        "requester": event.requester,
        "recipient": recipient,
        "confirmers": joined((c.nic for c in event.confirmers), language),
        "expires_at": display_time(event.expires_at, language),
    }
    subject = _l("Heads-up: %(to)s to become the %(role)s contact of %(service)s", to=event.to, role=role, service=event.service)
    return Email(
        subject=subject.translated(language),
        body=templates(language).get_template("heads_up.txt").render(context),
        language=language,
    )


OUTCOME_SUBJECTS = {
    RequestState.rejected: N_("Contact change refused for %(service)s"),
    RequestState.declined: N_("Contact change declined for %(service)s"),
    RequestState.cancelled: N_("Contact change cancelled for %(service)s"),
    RequestState.expired: N_("Contact change expired for %(service)s"),
    RequestState.failed: N_("Contact change failed for %(service)s"),
    RequestState.done: N_("Contact change done for %(service)s"),
}


def outcome_email(event: ContactChangeStateChanged, recipient: str, language: str = SOURCE_LANGUAGE) -> Email:
    """The email telling a party how a request ended, in `language`. The reason is the one
    recorded (the billing check's, a support agent's...): in the words it was given in."""
    language = supported(language)
    context = {
        "request_id": str(event.request_id),
        "service": event.service,
        "role": role_name(event.type.value, language),
        "from_": event.from_,
        "to": event.to,
        "state": event.state.value,
        "reason": event.reason,
        "recipient": recipient,
    }
    return Email(
        subject=translate(language, OUTCOME_SUBJECTS[event.state], service=event.service),
        body=templates(language).get_template(f"{event.state.value}.txt").render(context),
        language=language,
    )

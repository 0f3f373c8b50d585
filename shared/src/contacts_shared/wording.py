"""How people are shown what the contracts name, the same on the pages and in the emails: the
words for the contact roles and the date format."""

from __future__ import annotations

from datetime import datetime

from contacts_shared.contracts import ContactType

# Keyed by ContactType, a str: the plain value ("tech") finds its word too.
ROLE_NAMES: dict[str, str] = {ContactType.admin: "administrative", ContactType.tech: "technical", ContactType.billing: "billing"}


def display_time(value: datetime) -> str:
    """A moment as pages and emails show it: 2026-01-31 12:00 UTC."""
    return value.strftime("%Y-%m-%d %H:%M UTC")


def masked_email(address: str) -> str:
    """Where a code went, as every party of the request may see it: the mailbox's first letter
    and the domain (webmaster@shop-example.test: w•••@shop-example.test), enough for its owner
    to recognise it and for nobody else to use it."""
    mailbox, at, domain = address.rpartition("@")
    if not at or not mailbox:
        return "•••"
    return f"{mailbox[0]}•••@{domain}"

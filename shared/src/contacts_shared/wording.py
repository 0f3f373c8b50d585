"""How people are shown what the contracts name, the same on the pages and in the emails: the
words for the contact roles and the date format, in English and in the reader's language."""

from __future__ import annotations

from datetime import datetime

from contacts_shared.contracts import ContactType
from contacts_shared.i18n import N_, SOURCE_LANGUAGE, Text, format_moment, translate

# Keyed by ContactType, a str: the plain value ("tech") finds its word too. In a sentence, each
# stands where a language puts the adjective of "contact" (the technical contact, le contact
# technique).
ROLE_NAMES: dict[str, str] = {
    # Translators: the adjective of "contact" for each contact role (the administrative contact).
    ContactType.admin: N_("administrative"),
    ContactType.tech: N_("technical"),
    ContactType.billing: N_("billing"),
}


def role_name(ctype: str, language: str = SOURCE_LANGUAGE) -> str:
    """The word for a contact role in `language` (an unknown role as it is)."""
    return translate(language, ROLE_NAMES[ctype]) if ctype in ROLE_NAMES else ctype


def role_text(ctype: str) -> Text:
    """The word for a contact role, in the language of whoever reads it (see `i18n.Text`)."""
    return Text(ROLE_NAMES[ctype], {})


def display_time(value: datetime, language: str = SOURCE_LANGUAGE) -> str:
    """A moment as pages and emails show it: 2026-01-31 12:00 UTC (in French 31 janv. 2026,
    12:00 UTC)."""
    return format_moment(value, language)


def masked_email(address: str) -> str:
    """Where a code went, as every party of the request may see it: the mailbox's first letter
    and the domain (webmaster@shop-example.test: w•••@shop-example.test), enough for its owner
    to recognise it and for nobody else to use it."""
    mailbox, at, domain = address.rpartition("@")
    if not at or not mailbox:
        return "•••"
    return f"{mailbox[0]}•••@{domain}"

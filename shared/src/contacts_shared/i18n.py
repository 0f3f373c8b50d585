"""The languages people read the system in: which there are, which one a person gets, and the
words and dates in it.

The source strings are English, in the code (marked `_l`, `_ln` or `N_`) and in the templates
(`{% trans %}`, `_()`); every other language is one gettext catalog, `locales/<tag>.po` (fr.po),
read at first use: adding a language is adding a catalog (`contacts translations --add <tag>`,
docs/architecture.md). A message missing from a catalog shows in English.

A person's language is a BCP 47 tag (their account's, or their browser's); they get the nearest
language there is a catalog for (fr for fr-CA), English when there is none.
"""

from __future__ import annotations

import functools
import gettext
import io
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from babel import Locale, negotiate_locale
from babel.dates import format_skeleton, get_datetime_format
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).parent / "locales"
SOURCE_LANGUAGE = "en"
# An Accept-Language header is read this far (a browser sends a handful of languages).
_MAX_ACCEPTED = 20
_ACCEPTED = re.compile(r"^\s*([A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*)\s*(?:;\s*q\s*=\s*([0-9](?:\.[0-9]{0,3})?))?\s*$")


@functools.cache
def languages() -> tuple[str, ...]:
    """The languages there are: English, the source, and one per catalog."""
    return (SOURCE_LANGUAGE, *sorted(path.stem for path in LOCALES_DIR.glob("*.po")))


def supported(tag: str | None) -> str:
    """The language there is nearest to a BCP 47 tag: itself, else the same without its last
    subtag (fr for fr-CA, zh for zh-Hant-TW), else English."""
    wanted = (tag or "").strip().replace("_", "-").lower()
    ours = {language.lower(): language for language in languages()}
    while wanted:
        if wanted in ours:
            return ours[wanted]
        wanted = wanted.rpartition("-")[0]
    return SOURCE_LANGUAGE


def accepted_languages(header: str | None) -> list[str]:
    """The tags of an Accept-Language header, most wanted first (`*` and q=0 left out)."""
    weighted = []
    for position, part in enumerate((header or "").split(",")[:_MAX_ACCEPTED]):
        match = _ACCEPTED.match(part)
        quality = float(match[2]) if match and match[2] else 1.0
        if match and quality > 0:
            weighted.append((-quality, position, match[1]))
    return [tag for _, _, tag in sorted(weighted)]


def from_accept_language(header: str | None) -> str:
    """The language of ours a browser prefers (its Accept-Language header), English when it
    names none of them."""
    return supported(negotiate_locale(accepted_languages(header), languages(), sep="-"))


def babel_locale(tag: str) -> Locale:
    """Babel's locale of a BCP 47 tag (its data: plural forms, month names, list patterns)."""
    return Locale.parse(tag.replace("_", "-"), sep="-")


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """The catalog of a language, compiled in memory from its .po (English: the messages as
    they are, with English plural forms). A fuzzy translation is not used."""
    path = LOCALES_DIR / f"{language}.po"
    if language == SOURCE_LANGUAGE or not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as source:
        catalog = read_po(source, locale=babel_locale(language))
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


# --- words to be shown to a person, in the language they read ----------------------------------


def N_(message: str) -> str:
    """Marks a message for the catalogs, to be translated where it is shown (`translate`)."""
    return message


class Text(str):
    """Words for a person: in English wherever they are used as a `str` (the JSON API, logs, the
    request's history), in another language through `localized`. Each parameter is formatted in
    (`%(name)s`) and may be a `Text` itself."""

    msgid: str
    plural: str | None
    count: int | None
    params: dict[str, Any]

    def __new__(cls, msgid: str, params: dict[str, Any], plural: str | None = None, count: int | None = None) -> Self:
        english = gettext.NullTranslations().ngettext(msgid, plural, count) if plural is not None and count is not None else msgid
        text = super().__new__(cls, english % params)
        text.msgid, text.plural, text.count, text.params = msgid, plural, count, params
        return text

    def __reduce__(self) -> tuple[Any, ...]:  # copied or pickled as itself, not as its English
        return (type(self), (self.msgid, self.params, self.plural, self.count))

    def translated(self, language: str) -> str:
        catalog = translations(supported(language))
        if self.plural is not None and self.count is not None:
            message = catalog.ngettext(self.msgid, self.plural, self.count)
        else:
            message = catalog.gettext(self.msgid)
        return message % {name: localized(value, language) for name, value in self.params.items()}


def _l(message: str, **params: Any) -> Text:
    """`message` (English, `%(name)s` for each parameter) as words for a person: see `Text`."""
    return Text(message, params)


def _ln(singular: str, plural: str, count: int, **params: Any) -> Text:
    """The singular or the plural of a message after `count`, in the language's plural forms;
    `%(count)s` is the number."""
    return Text(singular, {"count": count, **params}, plural, count)


class _Listed(Text):
    def translated(self, language: str) -> str:
        return joined(self.params.values(), language)


def listed(items: Iterable[Any]) -> Text:
    """Items as a list in a sentence (a and b), each in the reader's language (see `joined`)."""
    params = {f"item{i}": item for i, item in enumerate(items)}
    return _Listed(" and ".join(f"%({name})s" for name in params), params)


def joined_text(parts: Iterable[Any], separator: str = ", ") -> Text:
    """`parts` one after the other, each in the reader's language (the separator as it is)."""
    params = {f"part{i}": part for i, part in enumerate(parts)}
    return Text(separator.replace("%", "%%").join(f"%({name})s" for name in params), params)


def translate(language: str, message: str, **params: Any) -> str:
    """A message marked with `N_`, in `language`."""
    return _l(message, **params).translated(language)


def localized(value: Any, language: str) -> Any:
    """`value` with each `Text` in it (in dicts, lists and tuples too) in `language`."""
    if isinstance(value, Text):
        return value.translated(language)
    if isinstance(value, dict):
        return {key: localized(item, language) for key, item in value.items()}
    if isinstance(value, list):
        return [localized(item, language) for item in value]
    if type(value) is tuple:
        return tuple(localized(item, language) for item in value)
    return value


def joined(items: Iterable[Any], language: str) -> str:
    """Items as a list in a sentence: a and b and c in English, as it always was; in the
    language's own way otherwise (a, b et c)."""
    words = [str(localized(item, language)) for item in items]
    if supported(language) == SOURCE_LANGUAGE:
        return " and ".join(words)
    return format_list(words, locale=babel_locale(supported(language))) if words else ""


# --- dates ---------------------------------------------------------------------------------------


def format_moment(value: datetime, language: str) -> str:
    """A moment as pages and emails show it, in UTC: 2026-01-31 12:00 UTC in English, in the
    language's own way otherwise (31 janv. 2026, 12:00 UTC)."""
    language = supported(language)
    if language == SOURCE_LANGUAGE:
        return value.strftime("%Y-%m-%d %H:%M UTC")
    locale = babel_locale(language)
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    date = format_skeleton("yMMMd", value, tzinfo=UTC, locale=locale)
    time = format_skeleton("Hm", value, tzinfo=UTC, locale=locale)
    return str(get_datetime_format("medium", locale=locale)).replace("{1}", date).replace("{0}", time) + " UTC"

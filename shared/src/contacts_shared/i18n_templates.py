"""Jinja2 templates in a language: one environment per language, with gettext (`{% trans %}`,
`_()`, plural forms through `{% pluralize %}` and `ngettext`), the dates (`when`) and the contact
roles (`role_name`) of that language, for the pages and the emails alike.

The gettext calls are "newstyle" (Jinja2's): a message is formatted with its parameters after
translation (`%(name)s`), each parameter escaped where the template escapes; a parameter that is
a `Text` is put in the same language.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined, pass_context
from jinja2.runtime import Context
from markupsafe import Markup

from contacts_shared.i18n import (
    format_moment,
    joined,
    localized,
    supported,
    translations,
)
from contacts_shared.wording import role_name


def environment(loader: BaseLoader, language: str, *, trimmed: bool = False, **options: Any) -> Environment:
    """An environment whose templates write `language` (one of `i18n.languages()`); `trimmed`:
    the whitespace of each `{% trans %}` block is collapsed (HTML), not kept as it is (plain
    text). `options`: Jinja2's (autoescape, trim_blocks...)."""
    language = supported(language)
    env = Environment(loader=loader, extensions=["jinja2.ext.i18n"], undefined=StrictUndefined, **options)
    env.policies["ext.i18n.trimmed"] = trimmed
    catalog = translations(language)

    def formatted(context: Context, message: str, params: dict[str, Any]) -> str:
        params = {name: localized(value, language) for name, value in params.items()}
        return Markup(message) % params if context.eval_ctx.autoescape else message % params

    @pass_context
    def gettext(context: Context, message: str, /, **params: Any) -> str:
        return formatted(context, catalog.gettext(message), params)

    @pass_context
    def ngettext(context: Context, singular: str, plural: str, number: int, /, **params: Any) -> str:
        params.setdefault("num", number)
        return formatted(context, catalog.ngettext(singular, plural, number), params)

    env.newstyle_gettext = True  # type: ignore[attr-defined] - the i18n extension's switch
    env.globals.update(gettext=gettext, _=gettext, ngettext=ngettext, language=language)
    env.filters.update(
        when=lambda value: format_moment(datetime.fromisoformat(value) if isinstance(value, str) else value, language) if value else "",
        role_name=lambda ctype: role_name(ctype, language),
        joined=lambda items: joined(items, language),
        localized=lambda value: localized(value, language),
        # The first letter up, the rest as it is (Jinja2's `capitalize` lowers the rest: ids too).
        upfirst=lambda text: text[:1].upper() + text[1:],
    )
    return env


def extracted_messages(env: Environment) -> list[tuple[str, int, str | tuple[str, ...]]]:
    """(template, line, message) of every message of the environment's templates, as its own
    lexer reads them (what `gettext` will be asked for); a plural is (singular, plural)."""
    assert env.loader is not None
    found = []
    for name in env.list_templates():
        source, _, _ = env.loader.get_source(env, name)
        for line, _, message in env.extract_translations(source):  # type: ignore[attr-defined]
            if isinstance(message, tuple):
                message = tuple(part for part in message if part is not None)
            found.append((name, line, message[0] if isinstance(message, tuple) and len(message) == 1 else message))
    return found

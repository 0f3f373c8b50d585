"""`contacts translations`: the gettext catalogs kept in step with the English source strings.

Every message is extracted in-process: from the code of the packages that write for people
(`_l`, `_ln` and `N_` in contacts_shared, contacts_requests and contacts_notifier) and from the
templates, as each service's own Jinja2 environment reads them (the pages' and the emails'), so a
message is extracted exactly as the template will ask for it. Each catalog,
`contacts_shared/locales/<tag>.po`, is then updated: a new message is added untranslated, one
gone from the code is dropped. `problems()` says what is out of step or untranslated; the test
of tools/tests/test_translations.py fails on any of it.
"""

from __future__ import annotations

import argparse
import importlib
import io
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract
from babel.messages.pofile import read_po, write_po
from contacts_shared.i18n import LOCALES_DIR, SOURCE_LANGUAGE, babel_locale, languages
from contacts_shared.i18n_templates import extracted_messages
from jinja2 import Environment, PackageLoader

COMMAND = "uv run contacts translations"
# The packages whose code holds messages, and the Python keywords that mark them.
PACKAGES = ("contacts_shared", "contacts_requests", "contacts_notifier")
KEYWORDS = {"_l": None, "_ln": (1, 2), "N_": None}
COMMENT_TAGS = ("Translators:",)
WIDTH = 100
HEADER = """\
# {language} messages of the contacts pages and emails.
# Written by hand; `uv run contacts translations` adds the new messages of the code (and drops
# those gone), untranslated. The msgids are English: see docs/architecture.md, "Languages".
#"""


def _environments() -> list[Environment]:
    # The services' own environments (imported here: the services do not depend on the tools).
    from contacts_notifier.domain import templates as emails
    from contacts_requests.page_views import templates as pages

    return [pages(SOURCE_LANGUAGE), emails(SOURCE_LANGUAGE)]


def _package_dir(package: str) -> Path:
    return Path(importlib.import_module(package).__file__ or "").parent


def _from_code() -> Iterator[tuple[str, int, str | tuple[str, ...], list[str]]]:
    for package in PACKAGES:
        root = _package_dir(package)
        for path in sorted(root.rglob("*.py")):
            with path.open("rb") as source:
                for line, message, comments, _ in extract("python", source, keywords=KEYWORDS, comment_tags=COMMENT_TAGS, strip_comment_tags=True):
                    yield f"{package}/{path.relative_to(root)}", line, message, comments


def _from_templates() -> Iterator[tuple[str, int, str | tuple[str, ...], list[str]]]:
    for env in _environments():
        loader = env.loader
        assert isinstance(loader, PackageLoader)
        for name, line, message in extracted_messages(env):
            yield f"{loader.package_name}/{loader.package_path}/{name}", line, message, []


def extracted() -> Catalog:
    """Every message of the code and the templates, untranslated (a template of the catalogs)."""
    catalog = Catalog(project="contacts", fuzzy=False)
    for location, line, message, comments in [*_from_code(), *_from_templates()]:
        catalog.add(message, None, [(location, line)], auto_comments=comments)
    return catalog


def catalog_path(language: str) -> Path:
    return LOCALES_DIR / f"{language}.po"


def shown(path: Path) -> Path:
    """A path in the project as people read it: shared/src/contacts_shared/locales/fr.po."""
    return path.relative_to(LOCALES_DIR.parents[3])


def read(language: str) -> Catalog:
    with catalog_path(language).open("rb") as source:
        return read_po(source, locale=babel_locale(language))


def _written(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_po(out, catalog, width=WIDTH, include_lineno=False, ignore_obsolete=True, include_previous=False)
    return out.getvalue()


def update(language: str, template: Catalog | None = None) -> bool:
    """Bring the catalog of `language` in step with the code (created when it does not exist yet);
    whether its file changed."""
    template = template or extracted()
    path = catalog_path(language)
    if path.exists():
        catalog = read(language)
    else:
        catalog = Catalog(
            locale=babel_locale(language),
            project="contacts",
            version="1",
            copyright_holder="the contacts project",
            language_team=f"{language} (contacts)",
            header_comment=HEADER.format(language=babel_locale(language).english_name),
            fuzzy=False,
        )
        catalog.creation_date = catalog.revision_date = template.creation_date
    before = path.read_bytes() if path.exists() else b""
    # Babel's placeholders for who translates and where to report a message: the project's.
    catalog.last_translator = catalog.msgid_bugs_address = "the contacts project (docs/architecture.md, Languages)"
    catalog.update(template, no_fuzzy_matching=True, update_header_comment=False, update_creation_date=False)
    catalog.obsolete.clear()
    after = _written(catalog)
    if after == before:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(after)
    return True


def _ids(catalog: Catalog) -> set[str]:
    return {message.id if isinstance(message.id, str) else message.id[0] for message in catalog if message.id}


def _untranslated(message: Message) -> bool:
    strings = message.string if isinstance(message.string, tuple | list) else (message.string,)
    return message.fuzzy or not all(strings)


def problems(template: Catalog | None = None) -> list[str]:
    """What is wrong with the catalogs, one line each: a message of the code missing from a
    catalog, one the code no longer has, a message without translation (or fuzzy), a translation
    whose %(name)s placeholders are not the message's."""
    template = template or extracted()
    found = []
    for language in languages()[1:]:
        catalog = read(language)
        name = shown(catalog_path(language))
        if missing := sorted(_ids(template) - _ids(catalog)):
            found.append(f"{name}: {len(missing)} message(s) of the code missing, run `{COMMAND}` then translate them: {missing}")
        if gone := sorted(_ids(catalog) - _ids(template)):
            found.append(f"{name}: {len(gone)} message(s) no longer in the code, run `{COMMAND}`: {gone}")
        if untranslated := [m.id for m in catalog if m.id and _untranslated(m)]:
            found.append(f"{name}: {len(untranslated)} message(s) without a translation (or marked fuzzy): write each msgstr, then run `{COMMAND}`: {untranslated}")
        for message, errors in catalog.check():
            found.append(f"{name}: {message.id!r}: {'; '.join(str(e) for e in errors)}")
    return found


# --- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    template = extracted()
    if args.add:
        language = args.add.replace("_", "-")
        babel_locale(language)  # an unknown language fails here, before a file is written
        if catalog_path(language).exists():
            print(f"{shown(catalog_path(language))} exists already")
    targets = sorted({*languages()[1:], *([args.add.replace("_", "-")] if args.add else [])})
    if not args.check:
        for language in targets:
            if update(language, template):
                print(f"{shown(catalog_path(language))}: updated")
        languages.cache_clear()  # a catalog added is a language now
    found = problems(template)
    for problem in found:
        print(problem)
    counts = {language: len(read(language)) for language in targets if catalog_path(language).exists()}
    print(f"{len(template)} message(s); catalogs: " + ", ".join(f"{lang} ({n})" for lang, n in counts.items()))
    return 1 if found else 0


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "translations",
        help="update the gettext catalogs from the messages of the code and the templates",
        description="Extract every message for people (the pages, the emails) from the code and the templates, "
        f"and update each catalog under {shown(LOCALES_DIR)}: new messages are added "
        "untranslated, those gone are dropped. Then translate what it lists (msgstr), and run it again: it exits 1 "
        "while a message lacks a translation. Adding a language is adding a catalog: --add <tag>.",
        epilog=f"examples:\n  {COMMAND}\n  {COMMAND} --check\n  {COMMAND} --add de",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming what is out of step or untranslated")
    parser.add_argument("--add", metavar="TAG", help="start the catalog of a new language (a BCP 47 tag such as de or pt-BR)")
    parser.set_defaults(run=run)

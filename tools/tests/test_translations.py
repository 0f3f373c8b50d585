"""The catalogs are complete and in step with the code: every message of the pages and the emails
(extracted in-process, as `contacts translations` does) is in every catalog, translated; none is
left over from code that is gone. A failure says what to run and what to translate."""

from __future__ import annotations

import pytest
from babel.messages.catalog import Catalog
from contacts_shared.i18n import languages
from contacts_tools import translations


@pytest.fixture(scope="module")
def extracted() -> Catalog:
    return translations.extracted()


def test_every_message_of_every_catalog_is_translated_and_in_step_with_the_code(extracted: Catalog) -> None:
    problems = translations.problems(extracted)
    assert not problems, "\n".join(
        [
            "The catalogs are not complete (see docs/architecture.md, 'Languages'):",
            *problems,
            f"Run `{translations.COMMAND}` to bring them in step, then write each missing msgstr.",
        ]
    )


def test_french_is_there_and_the_pages_and_emails_have_messages(extracted: Catalog) -> None:
    assert "fr" in languages()
    ids = {m.id for m in extracted if m.id}
    # One of each source: the code (`_l`), a page template, an email template, a plural.
    assert {"You are signed out.", "My contacts", "Hello %(recipient)s,"} <= ids
    assert ("%(count)s contact change asked together", "%(count)s contact changes asked together") in ids
    locations = {path for m in extracted for path, _ in m.locations}
    assert {"contacts_requests/templates/base.html", "contacts_notifier/templates/token.txt", "contacts_shared/wording.py"} <= locations


def test_a_new_message_a_gone_one_and_an_untranslated_one_are_each_named(extracted: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    with_new = Catalog()
    for message in extracted:
        if message.id and message.id != "You are signed out.":
            with_new.add(message.id)
    with_new.add("A message just added to a template")
    french = translations.read("fr")
    french["My contacts"].string = ""

    monkeypatch.setattr(translations, "read", lambda language: french)
    problems = "\n".join(translations.problems(with_new))

    assert "missing" in problems and "A message just added to a template" in problems
    assert "no longer in the code" in problems and "You are signed out." in problems
    assert "without a translation" in problems and "'My contacts'" in problems
    assert translations.COMMAND in problems


def test_a_translation_must_keep_the_placeholders_of_its_message(monkeypatch: pytest.MonkeyPatch, extracted: Catalog) -> None:
    french = translations.read("fr")
    french["Hello %(recipient)s,"].string = "Bonjour %(destinataire)s,"
    monkeypatch.setattr(translations, "read", lambda language: french)

    assert any("Hello %(recipient)s," in problem for problem in translations.problems(extracted))

"""The languages: which one a person gets (their account's tag, their browser's Accept-Language),
the words, plural forms and dates in it, and templates written in it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from contacts_shared.i18n import (
    SOURCE_LANGUAGE,
    Text,
    _l,
    _ln,
    from_accept_language,
    joined,
    joined_text,
    languages,
    listed,
    localized,
    supported,
    translate,
)
from contacts_shared.i18n_templates import environment, extracted_messages
from contacts_shared.wording import display_time, role_name, role_text
from jinja2 import DictLoader

MOMENT = datetime(2026, 1, 31, 12, 5, tzinfo=UTC)


def test_english_and_french_are_there() -> None:
    assert languages()[0] == SOURCE_LANGUAGE
    assert "fr" in languages()


@pytest.mark.parametrize(
    ("tag", "language"),
    [
        ("fr", "fr"),
        ("FR", "fr"),
        ("fr-CA", "fr"),  # the nearest: the same without its region
        ("fr_BE", "fr"),
        ("en-GB", "en"),
        ("de", "en"),  # no German catalog: English
        ("zh-Hant-TW", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_a_tag_gets_the_nearest_language_there_is(tag: str | None, language: str) -> None:
    assert supported(tag) == language


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "fr"),  # Chromium's, in French
        ("en-GB,en;q=0.9", "en"),
        ("de-DE,de;q=0.9,fr;q=0.5,en;q=0.3", "fr"),  # no German: the next the browser prefers
        ("en;q=0.4,fr;q=0.8", "fr"),  # by quality, not by order
        ("fr;q=0,en", "en"),  # q=0: not wanted
        ("de, *", "en"),
        ("", "en"),
        (None, "en"),
        ("fr;q=abc, ;;, ", "en"),  # nonsense reads as nothing
    ],
)
def test_the_sign_in_page_follows_the_browser(header: str | None, language: str) -> None:
    assert from_accept_language(header) == language


def test_dates_in_each_language() -> None:
    assert display_time(MOMENT) == "2026-01-31 12:05 UTC"  # English as it always was
    assert display_time(MOMENT, "fr") == "31 janv. 2026, 12:05 UTC"
    assert display_time(MOMENT, "de") == display_time(MOMENT)  # no German: English


def test_words_are_english_as_str_and_translated_on_demand() -> None:
    text = _l("%(nic)s is already the %(role)s contact of this service.", nic="bb2-ovh", role=role_text("tech"))
    assert text == "bb2-ovh is already the technical contact of this service."  # the API's, the logs'
    assert text.translated("fr") == "bb2-ovh est déjà le contact technique de ce service."
    assert text.translated("fr-CA") == text.translated("fr")
    assert text.translated("de") == text
    # Inside what a page is given, each Text is put in the page's language.
    assert localized({"error": text, "items": [text, 3]}, "fr")["items"][0] == text.translated("fr")
    # A message no catalog knows stays as written.
    assert _l("A message nobody translated (%(n)s)", n=1).translated("fr") == "A message nobody translated (1)"


def test_plural_forms_follow_each_language() -> None:
    def asked(count: int) -> Text:
        return _ln("%(count)s contact change asked together", "%(count)s contact changes asked together", count)

    assert [asked(n) for n in (0, 1, 2)] == ["0 contact changes asked together", "1 contact change asked together", "2 contact changes asked together"]
    # French is singular for 0 and 1.
    assert [asked(n).translated("fr") for n in (0, 1, 2)] == [
        "0 changement de contact demandé ensemble",
        "1 changement de contact demandé ensemble",
        "2 changements de contact demandés ensemble",
    ]


def test_lists_and_roles_in_each_language() -> None:
    assert joined(["aa1-ovh", "bb2-ovh"], "en") == "aa1-ovh and bb2-ovh"
    assert joined(["aa1-ovh", "bb2-ovh", "cc3-ovh"], "fr") == "aa1-ovh, bb2-ovh et cc3-ovh"
    roles = listed([role_text("admin"), role_text("billing")])
    assert roles == "administrative and billing"
    assert roles.translated("fr") == "administratif et de facturation"
    progress = joined_text([_l("accepted by %(nics)s", nics="bb2-ovh"), _l("waiting for %(nics)s", nics="aa1-ovh")])
    assert progress == "accepted by bb2-ovh, waiting for aa1-ovh"
    assert progress.translated("fr") == "accepté par bb2-ovh, en attente de aa1-ovh"
    assert role_name("tech", "fr") == "technique" and role_name("tech") == "technical" and role_name("owner", "fr") == "owner"
    assert translate("fr", "Contact change done for %(service)s", service="x.example") == "Changement de contact effectué pour x.example"


TEMPLATES = {
    "page.html": '<p lang="{{ language }}">{% trans service=service %}Modify contacts of {{ service }}{% endtrans %}'
    "|{{ _('Not editable: %(reason)s', reason=reason) }}"
    "|{% trans count=n %}{{ count }} contact change asked together{% pluralize %}{{ count }} contact changes asked together{% endtrans %}"
    "|{{ moment | when }}|{{ 'tech' | role_name | upfirst }}</p>",
}


def test_templates_write_their_language_and_escape_what_they_are_given() -> None:
    context = {"service": "<b>x</b>", "reason": _l("Only the requester can cancel a request."), "n": 2, "moment": MOMENT}
    english = environment(DictLoader(TEMPLATES), "en", autoescape=True).get_template("page.html").render(context)
    french = environment(DictLoader(TEMPLATES), "fr", autoescape=True).get_template("page.html").render(context)
    assert english == (
        '<p lang="en">Modify contacts of &lt;b&gt;x&lt;/b&gt;|Not editable: Only the requester can cancel a request.'
        "|2 contact changes asked together|2026-01-31 12:05 UTC|Technical</p>"
    )
    assert french == (
        '<p lang="fr">Modifier les contacts de &lt;b&gt;x&lt;/b&gt;|Non modifiable\u00a0: Seul le demandeur peut annuler une demande.'
        "|2 changements de contact demandés ensemble|31 janv. 2026, 12:05 UTC|Technique</p>"
    )


def test_the_messages_of_templates_are_extracted_as_they_render() -> None:
    found = {message for _, _, message in extracted_messages(environment(DictLoader(TEMPLATES), "en", autoescape=True))}
    assert found == {
        "Modify contacts of %(service)s",
        "Not editable: %(reason)s",
        ("%(count)s contact change asked together", "%(count)s contact changes asked together"),
    }

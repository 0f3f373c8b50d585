"""How people are shown what the contracts name: the masked address a code went to."""

from __future__ import annotations

import pytest
from contacts_shared.wording import masked_email


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("webmaster@shop-example.test", "w•••@shop-example.test"),
        ("j@example.com", "j•••@example.com"),
        ("first.last+tag@mail.example.org", "f•••@mail.example.org"),
        ("not-an-address", "•••"),
        ("@example.com", "•••"),
    ],
)
def test_only_the_first_letter_and_the_domain_are_shown(address: str, shown: str) -> None:
    assert masked_email(address) == shown

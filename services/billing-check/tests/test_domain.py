"""The billing check's rule, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from contacts_billing_check.domain import PaymentMethod, vet_billing
from contacts_shared.contracts import ContactType

NOW = datetime(2026, 6, 1, tzinfo=UTC)
VALID = PaymentMethod("pm-1", NOW + timedelta(days=30))
EXPIRED = PaymentMethod("pm-2", NOW - timedelta(days=1))
NEVER_EXPIRES = PaymentMethod("pm-3", None)


def vet(ctype=ContactType.tech, unpaid_from=(), unpaid_to=(), methods=()):
    return vet_billing(
        ctype=ctype, from_nic="aa1-ovh", to_nic="bb2-ovh", unpaid_of_from=list(unpaid_from),
        unpaid_of_to=list(unpaid_to), payment_methods_of_to=list(methods), now=NOW,
    )  # fmt: skip


def test_clean_accounts_are_approved() -> None:
    assert vet().approved and vet().reasons == []


def test_unpaid_invoice_on_previous_account() -> None:
    verdict = vet(unpaid_from=["INV-1"])
    assert not verdict.approved
    assert verdict.reasons == ["the previous contact aa1-ovh has an unpaid invoice"]
    assert verdict.evidence == ["INV-1"]


def test_unpaid_invoice_on_new_account() -> None:
    verdict = vet(unpaid_to=["INV-2", "INV-1"])
    assert verdict.reasons == ["the new contact bb2-ovh has an unpaid invoice"]
    assert verdict.evidence == ["INV-1", "INV-2"]


def test_both_reasons_are_given() -> None:
    assert len(vet(unpaid_from=["A"], unpaid_to=["B"]).reasons) == 2


@pytest.mark.parametrize(("methods", "approved"), [((), False), ((EXPIRED,), False), ((VALID,), True), ((EXPIRED, NEVER_EXPIRES), True)])
def test_new_billing_contact_needs_a_valid_payment_method(methods, approved) -> None:
    verdict = vet(ContactType.billing, methods=methods)
    assert verdict.approved is approved
    if not approved:
        assert verdict.reasons == ["the new billing contact bb2-ovh has no valid payment method"]


def test_payment_method_matters_only_for_billing() -> None:
    assert vet(ContactType.tech).approved and vet(ContactType.admin).approved


def test_expiry_is_strictly_before_now() -> None:
    assert not PaymentMethod("x", NOW).is_valid(NOW)

"""The billing check's rule (spec section 2), pure: no I/O, `now` passed in.

A change is refused when the previous or the new account owes an unpaid invoice, or when a
new billing contact has no valid payment method. The reasons, shown to every party and emailed,
name the party and the rule and nothing of one customer's invoices to another; the invoices
themselves are the verdict's `evidence`, kept with the billing check (its log) for support.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from contacts_shared.contracts import ContactType


@dataclass(frozen=True)
class PaymentMethod:
    payment_method_id: str
    valid_until: datetime | None  # None: does not expire

    def is_valid(self, now: datetime) -> bool:
        return self.valid_until is None or self.valid_until > now


@dataclass(frozen=True)
class Verdict:
    approved: bool
    reasons: list[str]
    evidence: list[str] = field(default_factory=list)  # the unpaid invoices' ids, for support only


def vet_billing(
    *,
    ctype: ContactType,
    from_nic: str,
    to_nic: str,
    unpaid_of_from: Sequence[str],
    unpaid_of_to: Sequence[str],
    payment_methods_of_to: Sequence[PaymentMethod],
    now: datetime,
) -> Verdict:
    reasons = []
    if unpaid_of_from:
        reasons.append(f"the previous contact {from_nic} has an unpaid invoice")
    if unpaid_of_to:
        reasons.append(f"the new contact {to_nic} has an unpaid invoice")
    if ctype == ContactType.billing and not any(pm.is_valid(now) for pm in payment_methods_of_to):
        reasons.append(f"the new billing contact {to_nic} has no valid payment method")
    return Verdict(approved=not reasons, reasons=reasons, evidence=sorted({*unpaid_of_from, *unpaid_of_to}))

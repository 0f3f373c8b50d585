"""A small, realistic world to try the product with: `contacts demo` publishes it.

The webmaster story of the user guide: the owner of a small web shop (`aa11111-ovh`) is the
admin and billing contact of her hosting plan and her domain; the agency that built the shop
used to be the technical contact (`cc33333-ovh`), and she wants her new webmaster
(`bb22222-ovh`) to take over. Around them:

- `dd44444-ovh` has an unpaid invoice, so the billing check refuses any change involving them;
- `ee55555-ovh` is in the CA zone, so EU accounts cannot hand it a contact (and it cannot take
  one), but it manages its own VPS; it reads French (`fr-CA`): its pages and emails are in French;
- the owner and the webmaster have valid payment methods, so either can become billing contact.

The messages come in the order other systems would send them: accounts before the services
that name them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from contacts_shared.contracts import (
    AccountUpserted,
    Contract,
    InvoiceIssued,
    PaymentMethodUpserted,
    ServiceUpserted,
    Zone,
    utcnow,
)

OWNER = "aa11111-ovh"
WEBMASTER = "bb22222-ovh"
CURRENT_TECH = "cc33333-ovh"
LATE_PAYER = "dd44444-ovh"
CANADIAN = "ee55555-ovh"

HOSTING = "shop-example.web-hosting"
DOMAIN = "shop-example.com"
VPS = "vps-ca-0042.example.test"


def demo_messages(now: datetime | None = None) -> list[Contract]:
    """The demo world as the messages that feed it; dates are relative to `now`."""
    now = now or utcnow()
    return [
        AccountUpserted(nic=OWNER, email="owner@shop-example.test", zone=Zone.EU),
        AccountUpserted(nic=WEBMASTER, email="webmaster@shop-example.test", zone=Zone.EU),
        AccountUpserted(nic=CURRENT_TECH, email="tech@web-agency.test", zone=Zone.EU),
        AccountUpserted(nic=LATE_PAYER, email="accounts@late-payer.test", zone=Zone.EU),
        AccountUpserted(nic=CANADIAN, email="ops@maple-hosting.test", zone=Zone.CA, language="fr-CA"),
        ServiceUpserted(service=HOSTING, type="hosting", admin=OWNER, tech=CURRENT_TECH, billing=OWNER),
        ServiceUpserted(service=DOMAIN, type="domain", admin=OWNER, tech=CURRENT_TECH, billing=OWNER),
        ServiceUpserted(service=VPS, type="vps", admin=CANADIAN, tech=CANADIAN, billing=CANADIAN),
        InvoiceIssued(
            invoice_id="inv-000417",
            nic=LATE_PAYER,
            amount="59.88",
            currency="EUR",
            due_at=now - timedelta(days=12),  # overdue, and never paid
        ),
        PaymentMethodUpserted(
            payment_method_id="pm-owner-card", nic=OWNER, kind="card", valid_until=now + timedelta(days=730)
        ),
        PaymentMethodUpserted(payment_method_id="pm-webmaster-sepa", nic=WEBMASTER, kind="sepa_debit", valid_until=None),
    ]


def describe(message: Contract) -> str:
    """One readable line: the fields of the message's data, in their declared order."""
    data = message.model_dump(mode="json", by_alias=True)
    return " ".join(f"{key}={value}" for key, value in data.items() if value is not None)

"""The seed's world: a web hosting plan whose admin is the shop owner, and the people around it.

Everything is fed the way other systems feed it: as messages on the exchange.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contacts_shared.contracts import (
    AccountUpserted,
    PaymentMethodUpserted,
    ServiceUpserted,
    Zone,
)
from support import System, eventually

OWNER = "aa11111-ovh"  # admin of the hosting plan
WEBMASTER = "bb22222-ovh"  # about to become its technical contact
OLD_TECH = "cc33333-ovh"  # current technical contact
BILLER = "dd44444-ovh"  # current billing contact
ACCOUNTANT = "ee55555-ovh"  # another EU account, with a valid payment method
CANADIAN = "ff66666-ovh"  # an account in another zone
STRANGER = "gg77777-ovh"  # no contact of anything
HOSTING = "shop-example.web-hosting"


def email_of(nic: str) -> str:
    return f"{nic}@example.test"


async def feed_world(system: System) -> System:
    """Feeds the accounts, the hosting plan and a payment method; returns the system."""
    eu = (OWNER, WEBMASTER, OLD_TECH, BILLER, ACCOUNTANT, STRANGER)
    await system.publish(
        *[AccountUpserted(nic=nic, email=email_of(nic), zone=Zone.EU) for nic in eu],
        AccountUpserted(nic=CANADIAN, email=email_of(CANADIAN), zone=Zone.CA),
        ServiceUpserted(service=HOSTING, type="hosting", admin=OWNER, tech=OLD_TECH, billing=BILLER),
        PaymentMethodUpserted(
            payment_method_id="pm-ee", nic=ACCOUNTANT, kind="card", valid_until=datetime.now(UTC) + timedelta(days=365)
        ),
    )
    # One queue per service, consumed in order: once the service shows, the accounts are in.
    await eventually(lambda: system.contacts_of(OWNER, HOSTING), what="the hosting plan to be known")
    await eventually(
        lambda: system.sql("billing_check", "SELECT 1 FROM payment_methods WHERE payment_method_id = 'pm-ee'"),
        what="the payment method to reach the billing check",
    )
    return system

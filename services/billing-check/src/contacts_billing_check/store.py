"""SQL of the billing check: replicas of invoices and payment methods.

Messages may arrive out of order; the replicas follow their `occurred_at`, not their arrival.
Each row keeps the version of the message that last wrote it, and a message applies only when
its version is newer: an `invoice.paid` delivered before an older `invoice.issued` leaves the
invoice paid, a `payment_method.removed` leaves a tombstone that an older upsert does not
revive. Versions compare as (occurred_at, paid or removed, message_id): at the same instant the
payment (the removal) wins over the issue (the upsert), otherwise the greater message_id, so
every delivery order ends in the same state. A newer `invoice.issued` reopens a paid invoice,
a newer upsert brings a removed payment method back (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from contacts_shared.contracts import Envelope

from contacts_billing_check.domain import PaymentMethod

MIGRATIONS = [
    """
    CREATE TABLE invoices (
        invoice_id text PRIMARY KEY,
        nic        text,
        amount     text,
        currency   text,
        due_at     timestamptz,
        paid       boolean NOT NULL DEFAULT false
    );
    CREATE INDEX invoices_unpaid_by_nic ON invoices (nic) WHERE NOT paid;

    CREATE TABLE payment_methods (
        payment_method_id text PRIMARY KEY,
        nic               text,
        kind              text,
        valid_until       timestamptz,
        removed           boolean NOT NULL DEFAULT false
    );
    CREATE INDEX payment_methods_by_nic ON payment_methods (nic) WHERE NOT removed;
    """,
    # The version of the message that last wrote each row (NULL: written before versions; any
    # message is newer).
    """
    ALTER TABLE invoices ADD COLUMN occurred_at timestamptz, ADD COLUMN message_id uuid;
    ALTER TABLE payment_methods ADD COLUMN occurred_at timestamptz, ADD COLUMN message_id uuid;
    """,
]


def _newer(table: str, final: str) -> str:
    """SQL (in an `ON CONFLICT DO UPDATE ... WHERE`): the message being inserted is newer than
    the row of `table` it conflicts with; `final` is the column the paying or removing message sets."""
    return (
        f"({table}.occurred_at IS NULL OR ({table}.occurred_at, {table}.{final}, {table}.message_id)"
        f" < (EXCLUDED.occurred_at, EXCLUDED.{final}, EXCLUDED.message_id))"
    )


async def record_invoice_issued(
    conn: asyncpg.Connection, envelope: Envelope, invoice_id: str, nic: str, amount: str, currency: str, due_at: datetime
) -> bool:
    """Apply an `invoice.issued` (the invoice is unpaid); False when a newer message was applied."""
    return bool(
        await conn.fetchval(
            "INSERT INTO invoices AS i (invoice_id, nic, amount, currency, due_at, occurred_at, message_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (invoice_id) DO UPDATE SET nic = EXCLUDED.nic, amount = EXCLUDED.amount,"
            " currency = EXCLUDED.currency, due_at = EXCLUDED.due_at, paid = false,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id"
            f" WHERE {_newer('i', 'paid')} RETURNING true",
            invoice_id,
            nic,
            amount,
            currency,
            due_at,
            envelope.occurred_at,
            envelope.message_id,
        )
    )


async def record_invoice_paid(conn: asyncpg.Connection, envelope: Envelope, invoice_id: str) -> bool:
    """Apply an `invoice.paid` (its details, if known, are kept); False when a newer message was applied."""
    return bool(
        await conn.fetchval(
            "INSERT INTO invoices AS i (invoice_id, paid, occurred_at, message_id) VALUES ($1, true, $2, $3)"
            " ON CONFLICT (invoice_id) DO UPDATE SET paid = true,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id"
            f" WHERE {_newer('i', 'paid')} RETURNING true",
            invoice_id,
            envelope.occurred_at,
            envelope.message_id,
        )
    )


async def upsert_payment_method(
    conn: asyncpg.Connection, envelope: Envelope, payment_method_id: str, nic: str, kind: str, valid_until: datetime | None
) -> bool:
    """Apply a `payment_method.upserted`; False when a newer message (upsert or removal) was applied."""
    return bool(
        await conn.fetchval(
            "INSERT INTO payment_methods AS p (payment_method_id, nic, kind, valid_until, occurred_at, message_id)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (payment_method_id) DO UPDATE SET nic = EXCLUDED.nic, kind = EXCLUDED.kind,"
            " valid_until = EXCLUDED.valid_until, removed = false,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id"
            f" WHERE {_newer('p', 'removed')} RETURNING true",
            payment_method_id,
            nic,
            kind,
            valid_until,
            envelope.occurred_at,
            envelope.message_id,
        )
    )


async def remove_payment_method(conn: asyncpg.Connection, envelope: Envelope, payment_method_id: str) -> bool:
    """Apply a `payment_method.removed`: a tombstone, also for a method not seen yet. False when a
    newer message was applied."""
    return bool(
        await conn.fetchval(
            "INSERT INTO payment_methods AS p (payment_method_id, removed, occurred_at, message_id) VALUES ($1, true, $2, $3)"
            " ON CONFLICT (payment_method_id) DO UPDATE SET removed = true,"
            " occurred_at = EXCLUDED.occurred_at, message_id = EXCLUDED.message_id"
            f" WHERE {_newer('p', 'removed')} RETURNING true",
            payment_method_id,
            envelope.occurred_at,
            envelope.message_id,
        )
    )


@dataclass(frozen=True)
class BillingOf:
    """What vetting one change needs to know, read in one statement: one round trip per change."""

    unpaid_of_from: list[str]
    unpaid_of_to: list[str]
    payment_methods_of_to: list[PaymentMethod]


async def billing_of(conn: asyncpg.Connection, from_nic: str, to_nic: str) -> BillingOf:
    row = await conn.fetchrow(
        "SELECT ARRAY(SELECT invoice_id FROM invoices WHERE nic = $1 AND NOT paid ORDER BY invoice_id) AS unpaid_of_from,"
        " ARRAY(SELECT invoice_id FROM invoices WHERE nic = $2 AND NOT paid ORDER BY invoice_id) AS unpaid_of_to,"
        " ARRAY(SELECT ROW(payment_method_id, valid_until) FROM payment_methods WHERE nic = $2 AND NOT removed"
        " ORDER BY payment_method_id) AS methods_of_to",
        from_nic,
        to_nic,
    )
    return BillingOf(
        unpaid_of_from=list(row["unpaid_of_from"]),
        unpaid_of_to=list(row["unpaid_of_to"]),
        payment_methods_of_to=[PaymentMethod(method_id, valid_until) for method_id, valid_until in row["methods_of_to"]],
    )

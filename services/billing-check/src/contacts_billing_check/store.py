"""SQL of the billing check: replicas of invoices and payment methods.

Messages may arrive out of order: an `invoice.paid` before its `invoice.issued` leaves a paid
row that the later issue does not reopen; a `payment_method.removed` before its upsert leaves
a tombstone the upsert respects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

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
]


async def record_invoice_issued(
    conn: asyncpg.Connection, invoice_id: str, nic: str, amount: str, currency: str, due_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO invoices (invoice_id, nic, amount, currency, due_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (invoice_id) DO UPDATE SET nic = EXCLUDED.nic, amount = EXCLUDED.amount,"
        " currency = EXCLUDED.currency, due_at = EXCLUDED.due_at",  # `paid` is kept as it is
        invoice_id,
        nic,
        amount,
        currency,
        due_at,
    )


async def record_invoice_paid(conn: asyncpg.Connection, invoice_id: str) -> None:
    await conn.execute(
        "INSERT INTO invoices (invoice_id, paid) VALUES ($1, true) ON CONFLICT (invoice_id) DO UPDATE SET paid = true",
        invoice_id,
    )


async def upsert_payment_method(
    conn: asyncpg.Connection, payment_method_id: str, nic: str, kind: str, valid_until: datetime | None
) -> None:
    await conn.execute(
        "INSERT INTO payment_methods (payment_method_id, nic, kind, valid_until) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (payment_method_id) DO UPDATE SET nic = EXCLUDED.nic, kind = EXCLUDED.kind,"
        " valid_until = EXCLUDED.valid_until",  # `removed` is kept: a removal is final
        payment_method_id,
        nic,
        kind,
        valid_until,
    )


async def remove_payment_method(conn: asyncpg.Connection, payment_method_id: str) -> None:
    await conn.execute(
        "INSERT INTO payment_methods (payment_method_id, removed) VALUES ($1, true)"
        " ON CONFLICT (payment_method_id) DO UPDATE SET removed = true",
        payment_method_id,
    )


@dataclass(frozen=True)
class BillingOf:
    """What vetting one change needs to know, read in one statement (a round trip per change
    where three were)."""

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

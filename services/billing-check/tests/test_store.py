"""The billing check's handlers against the real PostgreSQL, messages in any order."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from contacts_billing_check.handlers import HANDLERS
from contacts_billing_check.store import MIGRATIONS
from contacts_shared.contracts import (
    ContactChangeRequested,
    Contract,
    InvoiceIssued,
    InvoicePaid,
    PaymentMethodRemoved,
    PaymentMethodUpserted,
    envelope_for,
)
from contacts_shared.testing import schema_pool


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("billing_check", MIGRATIONS) as pool:
        yield pool


async def deliver(pool: asyncpg.Pool, *messages: Contract) -> None:
    for message in messages:
        envelope = envelope_for(message)
        async with pool.acquire() as conn, conn.transaction():
            await HANDLERS[envelope.type](conn, envelope, message)


async def vet(pool: asyncpg.Pool, ctype: str = "billing") -> dict:
    request = ContactChangeRequested(
        request_id=uuid.uuid4(), phase="submit", service="s", type=ctype, from_="aa1-ovh", to="bb2-ovh"
    )
    await deliver(pool, request)
    body = await pool.fetchval("SELECT body FROM outbox ORDER BY id DESC LIMIT 1")
    data = envelope_for(request).model_validate_json(body).data
    assert data["request_id"] == str(request.request_id)
    return data


def issued(invoice_id: str, nic: str = "bb2-ovh") -> InvoiceIssued:
    return InvoiceIssued(invoice_id=invoice_id, nic=nic, amount="1.00", currency="EUR", due_at="2026-01-01T00:00:00Z")


async def test_paid_before_issued_stays_paid(pool: asyncpg.Pool) -> None:
    await deliver(pool, PaymentMethodUpserted(payment_method_id="pm", nic="bb2-ovh", kind="card"))
    await deliver(pool, InvoicePaid(invoice_id="INV-1"), issued("INV-1"))
    assert (await vet(pool))["approved"] is True
    await deliver(pool, issued("INV-2"))
    verdict = await vet(pool)
    assert verdict["approved"] is False and "unpaid invoice (INV-2)" in verdict["reasons"][0]


async def test_removed_before_upserted_stays_removed(pool: asyncpg.Pool) -> None:
    await deliver(pool, PaymentMethodRemoved(payment_method_id="pm"))
    await deliver(pool, PaymentMethodUpserted(payment_method_id="pm", nic="bb2-ovh", kind="card"))
    verdict = await vet(pool)
    assert verdict["approved"] is False and "no valid payment method" in verdict["reasons"][0]
    assert (await vet(pool, "tech"))["approved"] is True


async def test_previous_contact_debt_is_seen(pool: asyncpg.Pool) -> None:
    await deliver(pool, issued("INV-9", nic="aa1-ovh"))
    verdict = await vet(pool, "tech")
    assert verdict["approved"] is False and "aa1-ovh" in verdict["reasons"][0]


async def test_a_request_delivered_twice_is_vetted_once(pool: asyncpg.Pool) -> None:
    # As the bus runs it: no transaction around the handler, which claims the message itself.
    request = ContactChangeRequested(
        request_id=uuid.uuid4(), phase="submit", service="s", type="tech", from_="aa1-ovh", to="bb2-ovh"
    )
    envelope = envelope_for(request)
    async with pool.acquire() as conn:
        assert await HANDLERS[envelope.type](conn, envelope, request) is True
        assert await HANDLERS[envelope.type](conn, envelope, request) is False
        assert not conn.is_in_transaction()
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", envelope.message_id) == 1

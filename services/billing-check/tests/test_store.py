"""The billing check's handlers against the real PostgreSQL, messages in any order: the
replicas follow the messages' `occurred_at`, not their arrival."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from contacts_billing_check import handlers
from contacts_billing_check.store import MIGRATIONS
from contacts_shared.contracts import (
    ContactChangeRequested,
    ContactChangeVetted,
    Contract,
    Envelope,
    InvoiceIssued,
    InvoicePaid,
    PaymentMethodRemoved,
    PaymentMethodUpserted,
    envelope_for,
    reply_id,
)
from contacts_shared.db import create_pool, migrate
from contacts_shared.handling import by_routing_key, on
from contacts_shared.outbox import publish_envelope
from contacts_tools.testing import TEST_DATABASE_URL, consuming_bus, schema_pool
from support import eventually

HANDLERS = by_routing_key(handlers.HANDLERS)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("billing_check", MIGRATIONS) as pool:
        yield pool


class Replies:
    """What the handlers answered, in place of the bus's `reply`: the tests below judge the
    verdicts; the last test runs the answer through RabbitMQ, as do the end-to-end and fault
    suites."""

    def __init__(self) -> None:
        self.sent: list[tuple[Envelope, Contract]] = []

    async def __call__(self, to: Envelope, answer: Contract) -> None:
        self.sent.append((to, answer))

    def to(self, request_id: uuid.UUID) -> list[Contract]:
        return [answer for _, answer in self.sent if getattr(answer, "request_id", None) == request_id]


REPLIES = Replies()


async def deliver(pool: asyncpg.Pool, *messages: Contract) -> None:
    for message in messages:
        envelope = envelope_for(message)
        async with pool.acquire() as conn, conn.transaction():
            await HANDLERS[envelope.type](conn, envelope, message, reply=REPLIES)


async def deliver_at(pool: asyncpg.Pool, message: Contract, at: datetime, message_id: uuid.UUID | None = None) -> None:
    """One message whose envelope says it occurred `at`."""
    envelope = envelope_for(message, message_id).model_copy(update={"occurred_at": at})
    async with pool.acquire() as conn, conn.transaction():
        await HANDLERS[envelope.type](conn, envelope, message, reply=REPLIES)


async def vet(pool: asyncpg.Pool, ctype: str = "billing") -> dict:
    request = ContactChangeRequested(
        request_id=uuid.uuid4(), phase="submit", service="s", type=ctype, from_="aa1-ovh", to="bb2-ovh"
    )
    await deliver(pool, request)
    (verdict,) = REPLIES.to(request.request_id)
    return verdict.model_dump(mode="json")


def issued(invoice_id: str, nic: str = "bb2-ovh") -> InvoiceIssued:
    return InvoiceIssued(invoice_id=invoice_id, nic=nic, amount="1.00", currency="EUR", due_at="2026-01-01T00:00:00Z")


def card(nic: str = "bb2-ovh") -> PaymentMethodUpserted:
    return PaymentMethodUpserted(payment_method_id="pm", nic=nic, kind="card")


async def test_paid_before_issued_stays_paid(pool: asyncpg.Pool) -> None:
    await deliver(pool, PaymentMethodUpserted(payment_method_id="pm", nic="bb2-ovh", kind="card"))
    await deliver_at(pool, InvoicePaid(invoice_id="INV-1"), t(2))
    await deliver_at(pool, issued("INV-1"), t(1))  # older: does not make it unpaid again
    assert (await vet(pool))["approved"] is True
    await deliver(pool, issued("INV-2"))
    verdict = await vet(pool)
    assert verdict["approved"] is False and "unpaid invoice" in verdict["reasons"][0]  # INV-2: INV-1 is paid


async def test_an_invoice_issued_after_its_payment_is_unpaid_again(pool: asyncpg.Pool) -> None:
    # Issued anew after the payment (a payment reversed, say): owed again.
    await deliver_at(pool, issued("INV-1"), t(1))
    await deliver_at(pool, InvoicePaid(invoice_id="INV-1"), t(2))
    await deliver_at(pool, issued("INV-1"), t(3))
    verdict = await vet(pool, "tech")
    assert verdict["approved"] is False and "unpaid invoice" in verdict["reasons"][0]
    # ... and an older payment arriving late changes nothing.
    await deliver_at(pool, InvoicePaid(invoice_id="INV-1"), t(2.5))
    assert (await vet(pool, "tech"))["approved"] is False


async def test_an_older_issue_does_not_move_the_invoice_back_to_its_former_account(pool: asyncpg.Pool) -> None:
    await deliver_at(pool, issued("INV-1", nic="aa1-ovh"), t(2))
    await deliver_at(pool, issued("INV-1", nic="bb2-ovh"), t(1))
    assert await pool.fetchval("SELECT nic FROM invoices WHERE invoice_id = 'INV-1'") == "aa1-ovh"
    verdict = await vet(pool, "tech")
    assert verdict["reasons"] == ["the previous contact aa1-ovh has an unpaid invoice"]


async def test_removed_before_upserted_stays_removed(pool: asyncpg.Pool) -> None:
    await deliver_at(pool, PaymentMethodRemoved(payment_method_id="pm"), t(2))
    await deliver_at(pool, card(), t(1))
    verdict = await vet(pool)
    assert verdict["approved"] is False and "no valid payment method" in verdict["reasons"][0]
    assert (await vet(pool, "tech"))["approved"] is True


async def test_a_payment_method_upserted_after_its_removal_counts_again(pool: asyncpg.Pool) -> None:
    await deliver_at(pool, card(), t(1))
    await deliver_at(pool, PaymentMethodRemoved(payment_method_id="pm"), t(2))
    assert (await vet(pool))["approved"] is False
    await deliver_at(pool, card(), t(3))
    assert (await vet(pool))["approved"] is True
    await deliver_at(pool, PaymentMethodRemoved(payment_method_id="pm"), t(2.5))  # older: ignored
    assert (await vet(pool))["approved"] is True


async def test_an_older_upsert_does_not_move_the_payment_method_back(pool: asyncpg.Pool) -> None:
    await deliver_at(pool, card("aa1-ovh"), t(2))
    await deliver_at(pool, card("bb2-ovh"), t(1))
    assert (await vet(pool))["approved"] is False  # the card is aa1-ovh's, not the new contact's


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
async def test_ties_at_the_same_instant_the_payment_and_the_removal_win(pool: asyncpg.Pool, reverse: bool) -> None:
    # Whatever the message ids: the greatest possible on the issue and the upsert.
    high, low = uuid.UUID(int=2**128 - 1), uuid.UUID(int=1)
    deliveries = [
        (issued("INV-1"), high),
        (InvoicePaid(invoice_id="INV-1"), low),
        (card(), high),
        (PaymentMethodRemoved(payment_method_id="pm"), low),
    ]
    for message, message_id in reversed(deliveries) if reverse else deliveries:
        await deliver_at(pool, message, t(1), message_id)
    assert (await vet(pool))["reasons"] == ["the new billing contact bb2-ovh has no valid payment method"]


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
async def test_ties_between_two_issues_the_greater_message_id_wins(pool: asyncpg.Pool, reverse: bool) -> None:
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    deliveries = [(issued("INV-1", nic="aa1-ovh"), low), (issued("INV-1", nic="bb2-ovh"), high)]
    for message, message_id in reversed(deliveries) if reverse else deliveries:
        await deliver_at(pool, message, t(1), message_id)
    assert await pool.fetchval("SELECT nic FROM invoices WHERE invoice_id = 'INV-1'") == "bb2-ovh"


async def test_an_existing_database_upgrades_and_its_rows_yield_to_any_message() -> None:
    async with schema_pool("billing_check", MIGRATIONS[:1]) as old:
        await old.execute("INSERT INTO invoices (invoice_id, nic, amount, currency, due_at) VALUES ('INV-1', 'bb2-ovh', '1', 'EUR', now())")
        await old.execute("INSERT INTO payment_methods (payment_method_id, nic, kind) VALUES ('pm', 'bb2-ovh', 'card')")
        schema = await old.fetchval("SELECT current_schema()")
        assert await migrate(TEST_DATABASE_URL, schema, MIGRATIONS) == 1
        pool = await create_pool(TEST_DATABASE_URL, schema)
        try:
            assert (await vet(pool))["reasons"] == ["the new contact bb2-ovh has an unpaid invoice"]
            await deliver_at(pool, InvoicePaid(invoice_id="INV-1"), T0 - timedelta(days=3650))
            await deliver_at(pool, PaymentMethodRemoved(payment_method_id="pm"), T0 - timedelta(days=3650))
            assert (await vet(pool))["reasons"] == ["the new billing contact bb2-ovh has no valid payment method"]
        finally:
            await pool.close()


async def test_previous_contact_debt_is_seen(pool: asyncpg.Pool) -> None:
    await deliver(pool, issued("INV-9", nic="aa1-ovh"))
    verdict = await vet(pool, "tech")
    assert verdict["approved"] is False and "aa1-ovh" in verdict["reasons"][0]


async def test_a_request_delivered_twice_is_answered_twice_as_the_same_message_claiming_nothing(pool: asyncpg.Pool) -> None:
    # As the bus runs it: no transaction around the handler, and nothing written.
    request = ContactChangeRequested(
        request_id=uuid.uuid4(), phase="submit", service="s", type="tech", from_="aa1-ovh", to="bb2-ovh"
    )
    envelope = envelope_for(request)
    async with pool.acquire() as conn:
        await HANDLERS[envelope.type](conn, envelope, request, reply=REPLIES)
        await HANDLERS[envelope.type](conn, envelope, request, reply=REPLIES)
        assert not conn.is_in_transaction()
    answers = [(to, answer) for to, answer in REPLIES.sent if getattr(answer, "request_id", None) == request.request_id]
    assert len(answers) == 2 and len({reply_id(to, answer) for to, answer in answers}) == 1
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 0


def test_the_answer_to_a_message_has_the_same_id_every_time() -> None:
    # A redelivery answered again is the same message to its consumer.
    question = envelope_for(ContactChangeRequested(request_id=uuid.uuid4(), phase="submit", service="s", type="tech", from_="aa1-ovh", to="bb2-ovh"))
    verdict = ContactChangeVetted(request_id=uuid.uuid4(), phase="submit", approved=True, reasons=[])
    assert reply_id(question, verdict) == reply_id(question, verdict.model_copy(update={"approved": False}))
    assert reply_id(question, verdict) != reply_id(question.model_copy(update={"message_id": uuid.uuid4()}), verdict)


async def test_a_question_delivered_twice_is_heard_once_through_rabbitmq(pool: asyncpg.Pool) -> None:
    # The real path: the billing check's bus consumes the question and publishes its verdict
    # (`ServiceBus.reply`) to a listener in the same namespace, as the requests service would be.
    namespace = f"t{uuid.uuid4().hex[:10]}_"
    heard: list[tuple[uuid.UUID, uuid.UUID]] = []

    async def on_verdict(conn: asyncpg.Connection, envelope: Envelope, data: ContactChangeVetted) -> None:
        heard.append((data.request_id, envelope.message_id))

    def question() -> Envelope:
        return envelope_for(ContactChangeRequested(request_id=uuid.uuid4(), phase="submit", service="s", type="tech", from_="aa1-ovh", to="bb2-ovh"))

    async with (
        schema_pool("listener", []) as listener_pool,
        consuming_bus(listener_pool, "requests", [on(ContactChangeVetted, on_verdict)], namespace=namespace),
        consuming_bus(pool, "billing_check", handlers.HANDLERS, namespace=namespace) as billing,
    ):
        twice, after = question(), question()
        for envelope in (twice, twice, after):
            assert await publish_envelope(billing.broker, billing.exchange, envelope)

        async def answered_after() -> bool:
            return any(str(request_id) == after.data["request_id"] for request_id, _ in heard) or None  # type: ignore[return-value]

        await eventually(answered_after, timeout=10, what="the verdict on the question sent last")
    verdict = ContactChangeVetted(request_id=uuid.UUID(twice.data["request_id"]), phase="submit", approved=True, reasons=[])
    assert [message_id for request_id, message_id in heard if str(request_id) == twice.data["request_id"]] == [reply_id(twice, verdict)]

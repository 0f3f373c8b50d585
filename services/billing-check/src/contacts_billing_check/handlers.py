"""Messages in: keep the replicas, and vet contact changes (at submission and again at apply)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from contacts_shared import contracts
from contacts_shared.contracts import Contract, Envelope, utcnow
from contacts_shared.crashpoints import crash_point
from contacts_shared.handling import Runs, Subscription, ignored_as_stale, on

from contacts_billing_check import store
from contacts_billing_check.domain import vet_billing

log = structlog.get_logger("contacts.billing_check")

# Publishes an answer to the message handled (`ServiceBus.reply`).
Reply = Callable[[Envelope, Contract], Awaitable[None]]


async def on_contact_change_requested(
    conn: asyncpg.Connection, envelope: Envelope, data: contracts.ContactChangeRequested, *, reply: Reply
) -> None:
    # The verdict follows from what is read and changes nothing here, so it needs neither a
    # transaction, nor the outbox, nor a claim: it is published at once, confirmed, as the
    # answer to this message. A redelivery is answered again with the same message id (derived
    # from the question's), which the requests service's inbox takes once.
    billing = await store.billing_of(conn, data.from_, data.to)
    verdict = vet_billing(
        ctype=data.type,
        from_nic=data.from_,
        to_nic=data.to,
        unpaid_of_from=billing.unpaid_of_from,
        unpaid_of_to=billing.unpaid_of_to,
        payment_methods_of_to=billing.payment_methods_of_to,
        now=utcnow(),
    )
    await reply(envelope, contracts.ContactChangeVetted(request_id=data.request_id, phase=data.phase, approved=verdict.approved, reasons=verdict.reasons))
    crash_point("after-reply-before-ack")
    # The invoices behind a refusal stay here, for support: the reasons name none.
    log.info("contact change vetted", request_id=str(data.request_id), phase=data.phase.value, approved=verdict.approved, unpaid_invoices=verdict.evidence)


# The replicas of the billing system's invoices and payment methods.


async def on_invoice_issued(conn: asyncpg.Connection, envelope: Envelope, data: contracts.InvoiceIssued) -> None:
    if not await store.record_invoice_issued(conn, envelope, data.invoice_id, data.nic, data.amount, data.currency, data.due_at):
        ignored_as_stale(envelope, invoice_id=data.invoice_id)


async def on_invoice_paid(conn: asyncpg.Connection, envelope: Envelope, data: contracts.InvoicePaid) -> None:
    if not await store.record_invoice_paid(conn, envelope, data.invoice_id):
        ignored_as_stale(envelope, invoice_id=data.invoice_id)


async def on_payment_method_upserted(conn: asyncpg.Connection, envelope: Envelope, data: contracts.PaymentMethodUpserted) -> None:
    if not await store.upsert_payment_method(conn, envelope, data.payment_method_id, data.nic, data.kind, data.valid_until):
        ignored_as_stale(envelope, payment_method_id=data.payment_method_id)


async def on_payment_method_removed(conn: asyncpg.Connection, envelope: Envelope, data: contracts.PaymentMethodRemoved) -> None:
    if not await store.remove_payment_method(conn, envelope, data.payment_method_id):
        ignored_as_stale(envelope, payment_method_id=data.payment_method_id)


HANDLERS: tuple[Subscription, ...] = (
    on(contracts.InvoiceIssued, on_invoice_issued),
    on(contracts.InvoicePaid, on_invoice_paid),
    on(contracts.PaymentMethodUpserted, on_payment_method_upserted),
    on(contracts.PaymentMethodRemoved, on_payment_method_removed),
    on(contracts.ContactChangeRequested, on_contact_change_requested, runs=Runs.answers_only),
)

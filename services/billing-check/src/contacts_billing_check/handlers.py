"""Messages in: keep the replicas, and vet contact changes (at submission and again at apply)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from contacts_shared import contracts
from contacts_shared.contracts import Contract, Envelope, utcnow
from contacts_shared.crashpoints import crash_point
from contacts_shared.db import claim_message
from contacts_shared.handling import Subscription, ignored_as_stale, on

from contacts_billing_check import store
from contacts_billing_check.domain import vet_billing

log = structlog.get_logger("contacts.billing_check")

# Publishes an answer to the message handled (`ServiceBus.reply`).
Reply = Callable[[Envelope, Contract], Awaitable[None]]


async def on_contact_change_requested(
    conn: asyncpg.Connection, envelope: Envelope, data: contracts.ContactChangeRequested, *, reply: Reply
) -> bool:
    # The verdict follows from what is read and changes nothing here, so it needs neither a
    # transaction nor the outbox: it is published at once, confirmed, as the answer to this
    # message (a redelivery's answer is the same message, taken once by the requests service's
    # inbox), then the message is claimed. A message claimed before is not answered again.
    billing = await store.billing_of(conn, data.from_, data.to, envelope.message_id)
    if billing.handled:
        return False
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
    crash_point("after-reply-before-claim")
    if fresh := await claim_message(conn, envelope.message_id, envelope.type):
        # The invoices behind a refusal stay here, for support: the reasons name none.
        log.info(
            "contact change vetted", request_id=str(data.request_id), phase=data.phase.value, approved=verdict.approved, unpaid_invoices=verdict.evidence
        )
    return fresh


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
    on(contracts.ContactChangeRequested, on_contact_change_requested, claims_itself=True),
)

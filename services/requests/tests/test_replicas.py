"""The replicas of accounts and services never go back in time (real PostgreSQL): a message
applies only when its `occurred_at` is newer than the one that last wrote the row, a delete
leaves a tombstone that every read ignores and that an older upsert does not revive, while a
newer upsert brings the record back. Ties are settled the same whatever the delivery order."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from contacts_requests import consumers, replicas, schema, store, views
from contacts_requests.contact_change import ContactChange
from contacts_requests.domain import PlannedChange, ReminderSchedule
from contacts_shared.contracts import (
    AccountDeleted,
    AccountUpserted,
    ContactChangeVetted,
    ContactType,
    Contract,
    Phase,
    RequestState,
    ServiceDeleted,
    ServiceUpserted,
    Zone,
    envelope_for,
)
from contacts_shared.db import create_pool, migrate
from contacts_shared.handling import by_routing_key
from contacts_tools.testing import TEST_DATABASE_URL, schema_pool

OWNER, WEBMASTER, OLD_TECH, BILLER = "aa11111-ovh", "bb22222-ovh", "cc33333-ovh", "dd44444-ovh"
HOSTING = "shop-example.web-hosting"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HANDLERS = by_routing_key(consumers.HANDLERS)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("requests", schema.MIGRATIONS) as pool:
        yield pool


async def deliver(pool: asyncpg.Pool, message: Contract, at: datetime, message_id: uuid.UUID | None = None) -> None:
    """As the bus does: the message's handler in a transaction, with an envelope `occurred_at` `at`."""
    envelope = envelope_for(message, message_id).model_copy(update={"occurred_at": at})
    async with pool.acquire() as conn, conn.transaction():
        await HANDLERS[envelope.type](conn, envelope, message, reminders=ReminderSchedule(timedelta(days=3), timedelta(days=1), 2))


def account(nic: str, email: str, zone: Zone = Zone.EU) -> AccountUpserted:
    return AccountUpserted(nic=nic, email=email, zone=zone)


def hosting(admin: str = OWNER, tech: str = OLD_TECH, billing: str = BILLER, type_: str = "hosting") -> ServiceUpserted:
    return ServiceUpserted(service=HOSTING, type=type_, admin=admin, tech=tech, billing=billing)


async def email_of(pool: asyncpg.Pool, nic: str) -> str | None:
    async with pool.acquire() as conn:
        found = await replicas.accounts_by_nic(conn, [nic])
    return found[nic].email if nic in found else None


async def contacts(pool: asyncpg.Pool) -> tuple[str, str, str] | None:
    async with pool.acquire() as conn:
        service = await replicas.get_service(conn, HOSTING)
    return (service.admin, service.tech, service.billing) if service else None


# --- accounts -------------------------------------------------------------------------------------


async def test_an_older_upsert_after_a_newer_one_is_ignored(pool: asyncpg.Pool) -> None:
    await deliver(pool, account(OWNER, "b@example.test"), t(2))
    await deliver(pool, account(OWNER, "a@example.test", Zone.CA), t(1))
    assert await email_of(pool, OWNER) == "b@example.test"
    async with pool.acquire() as conn:
        assert (await replicas.accounts_by_nic(conn, [OWNER]))[OWNER].zone == "EU"
    # In order, the newer one applies.
    await deliver(pool, account(OWNER, "c@example.test"), t(3))
    assert await email_of(pool, OWNER) == "c@example.test"


async def test_a_copy_of_an_older_message_arriving_again_changes_nothing(pool: asyncpg.Pool) -> None:
    # Even once its inbox row is gone (retention), or with no inbox at all: a replica write is
    # idempotent by its version.
    old = uuid.uuid4()
    await deliver(pool, account(OWNER, "old@example.test"), t(1), old)
    await deliver(pool, account(OWNER, "new@example.test"), t(2))
    await deliver(pool, account(OWNER, "old@example.test"), t(1), old)
    assert await email_of(pool, OWNER) == "new@example.test"


async def test_a_delete_leaves_a_tombstone_that_an_older_upsert_does_not_revive(pool: asyncpg.Pool) -> None:
    await deliver(pool, account(WEBMASTER, "w@example.test"), t(1))
    await deliver(pool, AccountDeleted(nic=WEBMASTER), t(3))
    await deliver(pool, account(WEBMASTER, "late@example.test"), t(2))
    assert await email_of(pool, WEBMASTER) is None
    # The tombstone keeps the version only: the address is erased.
    row = await pool.fetchrow("SELECT email, zone, deleted, occurred_at FROM account_rows WHERE nic = $1", WEBMASTER)
    assert (row["email"], row["zone"], row["deleted"], row["occurred_at"]) == (None, None, True, t(3))
    assert await pool.fetch("SELECT * FROM accounts WHERE nic = $1", WEBMASTER) == []


async def test_a_delete_arriving_before_its_account_still_wins_over_the_older_upsert(pool: asyncpg.Pool) -> None:
    await deliver(pool, AccountDeleted(nic=WEBMASTER), t(2))
    await deliver(pool, account(WEBMASTER, "w@example.test"), t(1))
    assert await email_of(pool, WEBMASTER) is None


async def test_an_upsert_newer_than_the_delete_brings_the_account_back(pool: asyncpg.Pool) -> None:
    await deliver(pool, account(WEBMASTER, "w@example.test"), t(1))
    await deliver(pool, AccountDeleted(nic=WEBMASTER), t(2))
    await deliver(pool, account(WEBMASTER, "again@example.test"), t(3))
    assert await email_of(pool, WEBMASTER) == "again@example.test"
    # ... and an older delete, arriving late, does not remove it again.
    await deliver(pool, AccountDeleted(nic=WEBMASTER), t(2.5))
    assert await email_of(pool, WEBMASTER) == "again@example.test"


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
async def test_ties_two_upserts_at_the_same_instant_the_greater_message_id_wins(pool: asyncpg.Pool, reverse: bool) -> None:
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    deliveries = [(account(OWNER, "low@example.test"), low), (account(OWNER, "high@example.test"), high)]
    for message, message_id in reversed(deliveries) if reverse else deliveries:
        await deliver(pool, message, t(1), message_id)
    assert await email_of(pool, OWNER) == "high@example.test"


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
async def test_ties_at_the_same_instant_the_delete_wins(pool: asyncpg.Pool, reverse: bool) -> None:
    # Whatever the message ids: the greatest possible id on the upsert, the smallest on the delete.
    deliveries = [
        (account(OWNER, "o@example.test"), uuid.UUID(int=2**128 - 1)),
        (AccountDeleted(nic=OWNER), uuid.UUID(int=1)),
    ]
    for message, message_id in reversed(deliveries) if reverse else deliveries:
        await deliver(pool, message, t(1), message_id)
    assert await email_of(pool, OWNER) is None


# --- services -------------------------------------------------------------------------------------


async def test_a_second_upsert_changes_the_type_not_the_contacts(pool: asyncpg.Pool) -> None:
    await deliver(pool, hosting(), t(1))
    await deliver(pool, hosting(admin=WEBMASTER, tech=WEBMASTER, billing=WEBMASTER, type_="hosting-pro"), t(2))
    assert await contacts(pool) == (OWNER, OLD_TECH, BILLER)
    async with pool.acquire() as conn:
        (row,) = await views.my_contacts(conn, OWNER)
    assert row["type"] == "hosting-pro"


async def test_a_contact_changed_here_survives_a_later_upsert(pool: asyncpg.Pool) -> None:
    await deliver(pool, hosting(), t(1))
    async with pool.acquire() as conn:
        await replicas.set_contact(store.Changes(), HOSTING, ContactType.tech, WEBMASTER).run(conn)
    await deliver(pool, hosting(type_="hosting-pro"), t(2))
    assert await contacts(pool) == (OWNER, WEBMASTER, BILLER)


async def test_an_older_service_upsert_is_ignored_even_its_type(pool: asyncpg.Pool) -> None:
    await deliver(pool, hosting(type_="hosting-pro"), t(2))
    await deliver(pool, hosting(admin=WEBMASTER, type_="hosting"), t(1))
    async with pool.acquire() as conn:
        (row,) = await views.my_contacts(conn, OWNER)
    assert (row["type"], row["contacts"]["admin"]) == ("hosting-pro", OWNER)


async def test_a_deleted_service_is_not_revived_by_an_older_upsert_and_no_read_sees_it(pool: asyncpg.Pool) -> None:
    await deliver(pool, account(OWNER, "o@example.test"), t(0))
    await deliver(pool, hosting(), t(1))
    await deliver(pool, ServiceDeleted(service=HOSTING), t(3))
    await deliver(pool, hosting(type_="late"), t(2))
    assert await contacts(pool) is None
    async with pool.acquire() as conn:
        assert await replicas.get_service(conn, HOSTING, for_update=True) is None
        assert await views.my_contacts(conn, OWNER) == []
        context = await store.submission_context(conn, HOSTING, [OWNER])
        assert context.service is None and set(context.accounts) == {OWNER}
        # A contact change applied meanwhile finds nothing to change.
        await replicas.set_contact(store.Changes(), HOSTING, ContactType.tech, WEBMASTER).run(conn)
    row = await pool.fetchrow("SELECT type, admin, tech, billing, deleted FROM service_rows WHERE service = $1", HOSTING)
    assert tuple(row) == (None, None, None, None, True)


async def test_a_service_created_again_after_its_delete_takes_the_new_contacts(pool: asyncpg.Pool) -> None:
    await deliver(pool, hosting(), t(1))
    await deliver(pool, ServiceDeleted(service=HOSTING), t(2))
    await deliver(pool, hosting(admin=WEBMASTER, tech=WEBMASTER, billing=WEBMASTER), t(3))
    assert await contacts(pool) == (WEBMASTER, WEBMASTER, WEBMASTER)


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
async def test_ties_a_service_upserted_and_deleted_at_the_same_instant_stays_deleted(pool: asyncpg.Pool, reverse: bool) -> None:
    deliveries = [(hosting(), uuid.UUID(int=2**128 - 1)), (ServiceDeleted(service=HOSTING), uuid.UUID(int=1))]
    for message, message_id in reversed(deliveries) if reverse else deliveries:
        await deliver(pool, message, t(1), message_id)
    assert await contacts(pool) is None


# --- what a deleted account does to a request -----------------------------------------------------------


async def _request(pool: asyncpg.Pool, state: RequestState) -> uuid.UUID:
    request_id = uuid.uuid4()
    async with pool.acquire() as conn:
        planned = PlannedChange(ContactType.tech, from_=OLD_TECH, to=WEBMASTER, confirmers=(OWNER, WEBMASTER))
        submitted = ContactChange.submitted(str(request_id), HOSTING, planned, OWNER, datetime.now(UTC) + timedelta(days=7))
        await store.Changes().insert_request(submitted.change).run(conn)
        if state != RequestState.checking:
            await store.Changes().set_state(request_id, state, "system", None).run(conn)
    return request_id


async def test_a_request_whose_confirmer_account_was_deleted_is_rejected_instead_of_sent_for_validation(
    pool: asyncpg.Pool,
) -> None:
    for nic in (OWNER, WEBMASTER, OLD_TECH):
        await deliver(pool, account(nic, f"{nic}@example.test"), t(0))
    await deliver(pool, hosting(), t(0))
    request_id = await _request(pool, RequestState.checking)
    await deliver(pool, AccountDeleted(nic=WEBMASTER), t(1))

    async with pool.acquire() as conn:
        loaded = await store.load(conn, request_id)
        assert loaded is not None and set(loaded.accounts) == {OWNER, OLD_TECH}  # the tombstone is not read
    await deliver(pool, ContactChangeVetted(request_id=request_id, phase=Phase.submit, approved=True, reasons=[]), t(2))

    async with pool.acquire() as conn:
        view = await views.request_view(conn, request_id)
    assert view is not None
    assert (view["state"], view["reason"]) == ("rejected", f"the account {WEBMASTER} no longer exists")
    # Nothing asks the notifier to send codes; the announcement names the parties still known.
    types = [r["routing_key"] for r in await pool.fetch("SELECT routing_key FROM outbox ORDER BY id")]
    assert "contact_change.validation_requested" not in types and "contact_change.state_changed" in types


# --- upgrading a database of the previous release ---------------------------------------------------


async def test_an_existing_database_upgrades_and_its_rows_yield_to_any_message() -> None:
    async with schema_pool("requests", schema.MIGRATIONS[:1]) as old:
        await old.execute("INSERT INTO accounts (nic, email, zone) VALUES ($1, 'o@example.test', 'EU'), ($2, 'w@example.test', 'EU')", OWNER, WEBMASTER)
        await old.execute(
            "INSERT INTO services (service, type, admin, tech, billing) VALUES ($1, 'hosting', $2, $3, $4)",
            HOSTING, OWNER, OLD_TECH, BILLER,
        )
        name = await old.fetchval("SELECT current_schema()")
        assert await migrate(TEST_DATABASE_URL, name, schema.MIGRATIONS) == len(schema.MIGRATIONS) - 1
        pool = await create_pool(TEST_DATABASE_URL, name)
        try:
            assert await email_of(pool, OWNER) == "o@example.test"
            assert await contacts(pool) == (OWNER, OLD_TECH, BILLER)
            # Rows written before versions existed: any message is newer.
            await deliver(pool, account(OWNER, "new@example.test"), T0 - timedelta(days=3650))
            await deliver(pool, AccountDeleted(nic=WEBMASTER), T0 - timedelta(days=3650))
            await deliver(pool, hosting(admin=WEBMASTER, type_="hosting-pro"), T0 - timedelta(days=3650))
            assert await email_of(pool, OWNER) == "new@example.test"
            assert await email_of(pool, WEBMASTER) is None
            assert await contacts(pool) == (OWNER, OLD_TECH, BILLER)  # not new: contacts kept
        finally:
            await pool.close()

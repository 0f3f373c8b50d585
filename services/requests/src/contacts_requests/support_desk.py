"""Use cases of support agents (the identity provider's role `support`): look up any service's
or any account's requests, and, on any request, cancel it, unlock a confirmer's code or have new
codes sent, each for a reason. What they may do is the domain's (`ContactChange.cancel_by_support`
and the like): never answer for anyone, never change a contact directly. Each action is written
in the request's history under the agent's name and announced on the bus, through the same unit
of work as the customers' own."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
from contacts_shared.contracts import RequestState

from contacts_requests import replicas, views
from contacts_requests.domain import not_found
from contacts_requests.store import LoadedChange
from contacts_requests.tokens import is_locked
from contacts_requests.unit_of_work import UnitOfWork

Before = tuple[datetime, uuid.UUID] | None


# --- looking up -------------------------------------------------------------------------------------


async def service_file(conn: asyncpg.Connection, service_id: str, *, limit: int, before: Before) -> dict[str, Any]:
    """A service's contacts and a page of its requests (up to `limit`, newest first); not found
    when the service is unknown and has no requests."""
    service = await views.service_row(conn, service_id)
    ids = await views.requests_of_service(conn, service_id, limit=limit, before=before)
    if service is None and not ids:
        raise not_found()
    return {"service": service, "ids": ids}


async def account_file(
    conn: asyncpg.Connection, nic: str, *, state: RequestState | None, limit: int, before: Before
) -> dict[str, Any]:
    """An account (its address, zone and language, or None once deleted) and a page of the
    requests it is party to, newest first; not found when the account is unknown and party to none."""
    account = (await replicas.accounts_by_nic(conn, [nic])).get(nic)
    ids = await views.requests_of(conn, nic, state=state.value if state else None, role=None, limit=limit, before=before)
    if account is None and not ids:
        raise not_found()
    shown = {"nic": account.nic, "email": account.email, "zone": account.zone, "language": account.language} if account else None
    return {"account": shown, "ids": ids}


async def request_file(conn: asyncpg.Connection, request_id: uuid.UUID) -> dict[str, Any]:
    """Any request, as an agent sees it (whose code is locked too)."""
    view = await views.request_view(conn, request_id, for_support=True)
    if view is None:
        raise not_found()
    return view


# --- acting -----------------------------------------------------------------------------------------


async def _load(uow: UnitOfWork, request_id: uuid.UUID) -> LoadedChange:
    loaded = await uow.load(request_id, for_update=True)
    if loaded is None:
        raise not_found()
    return loaded


async def cancel(conn: asyncpg.Connection, *, request_id: uuid.UUID, agent: str, reason: str) -> None:
    async with UnitOfWork(conn) as uow:
        loaded = await _load(uow, request_id)
        await uow.record(loaded.change.cancel_by_support(agent, reason), loaded.accounts)


async def unlock(conn: asyncpg.Connection, *, request_id: uuid.UUID, agent: str, nic: str, reason: str) -> None:
    async with UnitOfWork(conn) as uow:
        loaded = await _load(uow, request_id)
        slot = loaded.slots.get(nic)
        decision = loaded.change.unlock(agent, nic, reason, locked=slot is not None and is_locked(slot))
        await uow.record(decision, loaded.accounts)


async def resend(conn: asyncpg.Connection, *, request_id: uuid.UUID, agent: str, reason: str) -> None:
    # No customer's resend limit: it is what sends them to support. The agent's reason is
    # written and announced instead.
    async with UnitOfWork(conn) as uow:
        loaded = await _load(uow, request_id)
        await uow.record(loaded.change.resend_by_support(agent, reason, loaded.accounts), loaded.accounts)

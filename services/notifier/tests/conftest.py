"""Fixtures of the notifier's PostgreSQL tests: a schema of their own, the order for two
token emails (requester and new contact) that a contact change starts with, and its `done`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from contacts_notifier.store import MIGRATIONS
from contacts_shared.contracts import (
    Confirmer,
    ContactChangeStateChanged,
    ContactChangeValidationRequested,
    Party,
    utcnow,
)
from contacts_tools.testing import schema_pool


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with schema_pool("notifier", MIGRATIONS) as pool:
        yield pool


def _about(request_id: uuid.UUID) -> dict[str, Any]:
    """The change the notifier's tests are about: aa1-ovh hands the technical contact to bb2-ovh."""
    return {"request_id": request_id, "service": "svc-1", "type": "tech", "from_": "aa1-ovh", "to": "bb2-ovh"}


@pytest.fixture
def validation() -> Callable[..., ContactChangeValidationRequested]:
    def for_request(request_id: uuid.UUID, generation: int = 1) -> ContactChangeValidationRequested:
        return ContactChangeValidationRequested(
            **_about(request_id),
            requester="cc3-ovh",
            confirmers=[
                Confirmer(nic="cc3-ovh", email="cc3@example.com", generation=generation),
                Confirmer(nic="bb2-ovh", email="bb2@example.com", generation=generation),
            ],
            expires_at=utcnow() + timedelta(days=7),
        )

    return for_request


@pytest.fixture
def done_for() -> Callable[[uuid.UUID], ContactChangeStateChanged]:
    """The same change, done: its three parties are mailed the outcome."""
    return _done


def _done(request_id: uuid.UUID) -> ContactChangeStateChanged:
    return ContactChangeStateChanged(
        **_about(request_id),
        state="done",
        parties=[
            Party(nic="cc3-ovh", email="cc3@example.com", role="requester"),
            Party(nic="aa1-ovh", email="aa1@example.com", role="from"),
            Party(nic="bb2-ovh", email="bb2@example.com", role="to"),
        ],
    )

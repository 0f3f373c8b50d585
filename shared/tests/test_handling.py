"""Handler declarations: plain data, the data typed by the contract, dependencies by name."""

from __future__ import annotations

import typing
from datetime import timedelta

import pytest
from contacts_billing_check.handlers import HANDLERS as BILLING_CHECK
from contacts_notifier.handlers import HANDLERS as NOTIFIER
from contacts_requests.consumers import HANDLERS as REQUESTS
from contacts_shared.contracts import AccountDeleted, AccountUpserted, Envelope
from contacts_shared.handling import Runs, Subscription, by_routing_key, on

TABLES = {"requests": REQUESTS, "billing-check": BILLING_CHECK, "notifier": NOTIFIER}


@pytest.mark.parametrize("service", sorted(TABLES))
def test_each_handler_takes_the_data_of_its_contract(service: str) -> None:
    for subscription in by_routing_key(TABLES[service]).values():
        hints = typing.get_type_hints(subscription.handle)
        data_parameter = list(hints)[2]  # conn, envelope, data
        assert hints[data_parameter] is subscription.contract, subscription.routing_key


def test_a_dependency_is_given_by_name_and_a_missing_one_refused_at_start() -> None:
    got = {}

    async def handle(conn: object, envelope: Envelope, data: AccountUpserted, *, request_ttl: timedelta) -> None:
        got["ttl"] = request_ttl

    subscription = on(AccountUpserted, handle)
    assert subscription.dependencies == {"request_ttl"} and subscription.runs is Runs.in_transaction
    subscription.bound({"request_ttl": timedelta(days=1), "unrelated": 1})
    with pytest.raises(TypeError, match="account.upserted handler needs request_ttl"):
        subscription.bound({})


def test_a_type_handled_twice_is_refused() -> None:
    async def handle(*_: object) -> None:
        return None

    with pytest.raises(ValueError, match="account.deleted is handled twice"):
        by_routing_key([on(AccountDeleted, handle), on(AccountDeleted, handle)])
    assert isinstance(on(AccountDeleted, handle, runs=Runs.claims_itself), Subscription)

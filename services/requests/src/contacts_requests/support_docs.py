"""What the OpenAPI document says of the support desk's operations (`support_api`), as
`api_docs` does of the customers': declarations only, checked against every answer by
services/requests/tests/test_api_docs.py."""

from __future__ import annotations

from typing import Any

from contacts_shared.contracts import Zone
from pydantic import BaseModel, Field

from contacts_requests.api_docs import (
    NOT_A_UUID,
    Confirmer,
    ContactChangeRequest,
    Contacts,
    NicHandle,
    answer,
    problems,
)

TAG = {
    "name": "support",
    "description": "For support agents only (the identity provider's role `support`): look up any service or "
    "account, cancel a request, unlock a confirmer's code, resend codes; each for a reason, written in the "
    "request's history and announced on the bus. Anyone else gets 404 on every one of these operations.",
}


class SupportConfirmer(Confirmer):
    locked: bool = Field(description="the code is locked after too many wrong tries (an agent may unlock it)")


class SupportRequest(ContactChangeRequest):
    """A request as support agents see it: as its parties do, and whose code is locked."""

    confirmers: list[SupportConfirmer] = Field(description="who must confirm, by NIC")  # type: ignore[assignment]


class SupportService(BaseModel):
    service: str
    type: str = Field(description="the kind of service, e.g. web-hosting")
    contacts: Contacts


class SupportAccount(BaseModel):
    nic: NicHandle
    email: str
    zone: Zone
    language: str = Field(description="the language of the account's emails and pages, a BCP 47 tag (en when none was given)")


class _Page(BaseModel):
    items: list[SupportRequest] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last one")


class ServiceFile(_Page):
    service: SupportService | None = Field(description="null once the service is deleted (its requests remain)")


class AccountFile(_Page):
    account: SupportAccount | None = Field(description="null once the account is deleted (its requests remain)")


_NOT_AN_AGENT = "Not a support agent (the same answer as for an operation that does not exist)"
_REASON = "Invalid body (a `reason` is needed, under 500 characters) or `request_id`."


def _problems(causes: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return problems(*causes, causes={**causes, 404: f"{_NOT_AN_AGENT}, or {causes[404]}"})


SERVICE = {
    **answer(200, ServiceFile, "The service's contacts and one page of its requests"),
    **_problems({404: "no such service and no request about one so named.", 422: "Invalid `limit` or `cursor`."}),
}
ACCOUNT = {
    **answer(200, AccountFile, "The account and one page of the requests it is party to"),
    **_problems({404: "no such account and no request it is party to.", 422: "Invalid NIC handle, `state`, `limit` or `cursor`."}),
}
ONE = {**answer(200, SupportRequest, "The request"), **_problems({404: "no such request.", 422: NOT_A_UUID})}
CANCEL = {
    **answer(200, SupportRequest, "Cancelled; the request as it is now"),
    **_problems({404: "no such request.", 409: "The request is no longer open (`state`).", 422: _REASON}),
}
UNLOCK = {
    **answer(200, SupportRequest, "Unlocked: the confirmer's current code works again; the request as it is now"),
    **_problems(
        {
            404: "no such request, or that NIC is not one of its confirmers.",
            409: "The request is not waiting for confirmation (`state`), the confirmer has answered, or their code is not locked.",
            422: _REASON,
        }
    ),
}
RESEND = {
    **answer(202, SupportRequest, "Accepted: new codes are on their way; the request as it is now"),
    **_problems(
        {
            404: "no such request.",
            409: "The request is not waiting for confirmation (`state`), or a confirmer's account is gone.",
            422: _REASON,
        }
    ),
}

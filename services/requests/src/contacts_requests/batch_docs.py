"""What the OpenAPI document says of batches' operations (`batch_api`): declarations only,
checked against every answer by services/requests/tests/test_api_docs.py."""

from __future__ import annotations

import uuid

from contacts_shared.contracts import ContactType
from pydantic import BaseModel, Field

from contacts_requests.api_docs import (
    ContactChangeRequest,
    NicHandle,
    Problem,
    answer,
    problems,
)

_NOT_A_UUID = "`batch_id` is not a UUID."


class RefusedChange(BaseModel):
    service: str
    type: ContactType
    problem: Problem = Field(description="why, as a single submission would have been answered")


class BatchSubmitted(BaseModel):
    batch_id: uuid.UUID | None = Field(description="null when every change was refused (no batch was made)")
    items: list[ContactChangeRequest] = Field(description="the requests created, one per service and type, in state `checking`")
    refused: list[RefusedChange] = Field(description="the changes refused, each with its reason; they did not block the others")


class Batch(BaseModel):
    batch_id: uuid.UUID
    requester: NicHandle
    items: list[ContactChangeRequest] = Field(description="its requests that I am party to")


SUBMIT = {
    **answer(202, BatchSubmitted, "Accepted: the requests created and the changes refused"),
    **problems(422, causes={422: "Invalid body: `errors` names each field at fault (`changes.0.tech`)."}),
}
ONE = {**answer(200, Batch, "The batch"), **problems(404, 422, causes={404: "No such batch among those with a request you are party to.", 422: _NOT_A_UUID})}
_ANSWER_PROBLEMS = problems(
    404,
    409,
    422,
    causes={
        404: "No such batch among those with a request you are party to.",
        409: "No request of the batch waits for your answer any more.",
        422: "Invalid validation code (for every request tried), or an invalid body or `batch_id`.",
    },
)
ACCEPT = {**answer(200, Batch, "Accepted: each request that waited for me; the batch as it is now"), **_ANSWER_PROBLEMS}
DECLINE = {**answer(200, Batch, "Declined: each request that waited for me; the batch as it is now"), **_ANSWER_PROBLEMS}

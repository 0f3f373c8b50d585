"""What the OpenAPI document says about the HTTP API beyond its routes' signatures: metadata,
the ways to sign in, and the bodies and statuses of each operation.

Declarations only. The routes build their bodies by hand (`views.request_view`, `web.problem`);
the models here describe those bodies for the document and are never used to validate or
reshape a response, so documenting a body cannot change it. services/requests/tests/
test_api_docs.py checks every answer of the API against what is declared here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from contacts_shared.contracts import NIC_PATTERN, ContactType, RequestState
from fastapi import FastAPI
from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

PROBLEM = "application/problem+json"

DESCRIPTION = """\
Change the administrative, technical and billing contacts of your services through requests
that the people concerned confirm with a personal code sent to them by email.

- **Signing in**: every `/v1` operation needs the identity provider's JWT, sent as
  `Authorization: Bearer <jwt>`; reads also take it from the `contacts_session` cookie (the web
  pages' session), changes (POST) only from the header, so that no other site can make a
  signed-in browser change anything.
- **Errors** are RFC 9457 problem details (`application/problem+json`, schema `Problem`).
- **Retries**: a submission with an `Idempotency-Key` header is created once however many times
  it is sent.

Other systems talk to the services by messages instead: see docs/asyncapi.yaml and
docs/integration.md in the repository. Generated from the code by `uv run contacts docs`.
"""
LICENSE = {"name": "MIT", "identifier": "MIT"}
SERVERS = [
    {"url": "/", "description": "The server this document is served from"},
    {"url": "http://127.0.0.1:8000", "description": "Local development (./scripts/dev, docker compose up)"},
]
TAGS = [
    {"name": "contacts", "description": "The services where you are a contact."},
    {"name": "contact changes", "description": "Ask for a change of contact, follow it, confirm or decline it."},
    {"name": "operations", "description": "Liveness and readiness, for orchestrators (no sign-in)."},
]  # and `support_docs.TAG`, added with its routes
NO_SIGN_IN: dict[str, Any] = {"security": []}  # openapi_extra of the health checks, open to all


def ways_in(session_cookie: str) -> tuple[HTTPBearer, APIKeyCookie]:
    """The security schemes of the signed-in operations, either one: the `Authorization: Bearer`
    header, or the pages' session cookie. Declared as dependencies so that each operation names
    them; they never refuse anything (auto_error=False) and their values are not used."""
    bearer = HTTPBearer(
        auto_error=False, bearerFormat="JWT", scheme_name="bearer", description="The identity provider's JWT (HS256)."
    )
    session = APIKeyCookie(
        name=session_cookie,
        auto_error=False,
        scheme_name="session",
        description="The same JWT in the web pages' session cookie (read when there is no Bearer header), for GET only.",
    )
    return bearer, session


def operation_id(route: Any) -> str:
    """The operationId of a route: its function's name (`submit`, `one_request`...)."""
    return route.name


# --- bodies --------------------------------------------------------------------------------------

NicHandle = Annotated[str, Field(pattern=NIC_PATTERN.pattern, description="NIC handle, lower-case, e.g. aa00000-ovh")]


class Confirmer(BaseModel):
    nic: NicHandle
    state: Literal["pending", "accepted", "declined"]
    answered_at: datetime | None
    sent_to: str | None = Field(
        description="where the confirmer's current validation code was mailed, masked (w•••@shop-example.test); "
        "null until it is mailed, and again after a resend until the new one is"
    )
    sent_at: datetime | None = Field(description="when that code was mailed (the latest attempt, if the mail server did not take it at once)")


class HistoryEntry(BaseModel):
    at: datetime
    state: RequestState = Field(description="the request's state after this event")
    actor: str = Field(description="the NIC who acted, `support:` and the NIC of a support agent, or `billing-check` or `system`")
    reason: str | None


class ContactChangeRequest(BaseModel):
    """One request to change one contact of a service, as its parties see it."""

    id: uuid.UUID
    service: str
    type: ContactType
    from_: NicHandle = Field(alias="from", description="the contact being replaced")
    to: NicHandle
    requester: NicHandle
    state: RequestState
    reason: str | None = Field(description="the reason given with its current state (why it was rejected, failed...), if any")
    created_at: datetime
    updated_at: datetime
    expires_at: datetime = Field(description="when it expires unless every confirmer has answered")
    batch_id: uuid.UUID | None = Field(description="the batch it was submitted in (`POST /v1/contact-change-batches`), if any")
    confirmers: list[Confirmer] = Field(description="who must confirm, by NIC")
    history: list[HistoryEntry] = Field(description="every transition, oldest first")


class SubmittedRequests(BaseModel):
    items: list[ContactChangeRequest] = Field(description="one request per contact type asked, in state `checking`")


class RequestPage(BaseModel):
    items: list[ContactChangeRequest] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last one")


class Contacts(BaseModel):
    admin: NicHandle
    tech: NicHandle
    billing: NicHandle


class MyService(BaseModel):
    service: str
    type: str = Field(description="the kind of service, e.g. web-hosting")
    roles: list[ContactType] = Field(description="my roles on it")
    contacts: Contacts


class MyServices(BaseModel):
    items: list[MyService] = Field(description="in the order of their ids")
    next_cursor: str | None = Field(description="pass as `cursor` (with the same filters) for the next page; null on the last one")


class Health(BaseModel):
    status: Literal["ok"]


class ReadinessChecks(BaseModel):
    database: bool
    broker: bool


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: ReadinessChecks


class FieldError(BaseModel):
    field: str = Field(description="the input at fault: a body field (`tech`, `token`), a parameter, or `body`")
    message: str


def _absent_not_null(schema: dict[str, Any]) -> None:
    # The optional members of a problem are left out, never null: no `default: null` either.
    for member in schema["properties"].values():
        member.pop("default", None)


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (`application/problem+json`)."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    type: Literal["about:blank"] = Field(description="always about:blank: `status` and `title` say what it is")
    title: str = Field(description="short and stable for a given kind of error, e.g. `A request is already open`")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what happened and what to do, for a person")
    # The members below are present only when they apply (never null).
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        None, description="the inputs at fault: on every 422, and on a 403 or 409 about one contact type"
    )
    open_request_id: uuid.UUID | SkipJsonSchema[None] = Field(
        None, description="409 on a submission: the request already open for that contact type"
    )
    state: RequestState | SkipJsonSchema[None] = Field(
        None, description="409 on an action: the state the request is in, which does not allow it"
    )


# --- responses of each operation -----------------------------------------------------------------

PROBLEM_CAUSES = {
    401: "Not signed in: no identity token, or one expired, forged or malformed.",
    403: "The rules do not allow it.",
    404: "No such service or request among those you are a contact of (the same answer for one that does not exist).",
    409: "The request's state does not allow it.",
    422: "Invalid input; `errors` names each field at fault.",
    500: "Something went wrong on our side; nothing was changed. Try again.",
    503: "The database could not be reached, or was lost while answering: what you asked may have been recorded. "
    "Look before asking again, after the seconds `Retry-After` gives.",
}


def problems(*statuses: int, causes: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The problem responses of an operation, described by `causes` where the generic words of
    PROBLEM_CAUSES are not precise enough; 401, 500 and 503 are added, as every signed-in
    operation may answer them."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted({401, *statuses, 500, 503}):
        responses[status] = {
            "description": (causes or {}).get(status, PROBLEM_CAUSES[status]),
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    responses[401]["headers"] = {
        "WWW-Authenticate": {"description": 'Always `Bearer realm="contacts"`', "schema": {"type": "string"}}
    }
    return responses


def answer(status: int, model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """The success response of an operation, documented with `model`."""
    return {status: {"model": model, "description": description}}


def complete_document(app: FastAPI) -> None:
    """Add to the app's generated document what no route declares: the `Problem` schema, which
    the problem responses refer to under their own media type (FastAPI puts a response `model`
    under application/json only)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()  # cached by FastAPI in app.openapi_schema
            problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
            schemas = {**problem.pop("$defs", {}), "Problem": problem, **document["components"]["schemas"]}
            document["components"]["schemas"] = dict(sorted(schemas.items()))
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


# --- what each operation answers -----------------------------------------------------------------

NOT_A_UUID = "`request_id` is not a UUID."
HEALTHZ = answer(200, Health, "Alive")
READYZ = {**answer(200, Readiness, "Ready"), **answer(503, Readiness, "Not ready: `checks` says what fails")}
MY_CONTACTS = {
    **answer(200, MyServices, "One page of the services where I am a contact, with my roles"),
    **problems(422, causes={422: "Invalid `role`, `type`, `q`, `limit` or `cursor`."}),
}
SUBMIT = {
    **answer(202, SubmittedRequests, "Accepted: the requests created (or, for an Idempotency-Key sent before, found)"),
    **problems(
        403,
        404,
        409,
        422,
        causes={
            403: "Not allowed: a technical or billing contact may only replace themselves.",
            404: "No such service among those you are a contact of.",
            409: "A request for that contact type is already open on this service (`open_request_id`).",
            422: "Invalid body, nothing to change, unknown NIC or account, or another zone; "
            "`errors` names the contact type at fault.",
        },
    ),
}
MY_REQUESTS = {
    **answer(200, RequestPage, "One page of the requests"),
    **problems(422, causes={422: "Invalid `state`, `role`, `service`, `limit` or `cursor`."}),
}
ONE_REQUEST = {**answer(200, ContactChangeRequest, "The request"), **problems(404, 422, causes={422: NOT_A_UUID})}
_ANSWER_PROBLEMS = problems(
    403,
    404,
    409,
    422,
    causes={
        403: "You are informed of this request but not asked to confirm it.",
        409: "The request is no longer waiting for confirmation (`state`).",
        422: "Invalid validation code (mistyped, already used, expired, or locked after too many tries), "
        "or an invalid body or `request_id`.",
    },
)
ACCEPT = {**answer(200, ContactChangeRequest, "Accepted; the request as it is now"), **_ANSWER_PROBLEMS}
DECLINE = {**answer(200, ContactChangeRequest, "Declined; the request as it is now"), **_ANSWER_PROBLEMS}
RESEND = {
    **answer(202, ContactChangeRequest, "Accepted: new codes are on their way; the request as it is now"),
    **problems(
        403,
        404,
        409,
        422,
        causes={
            403: "Only the requester and the confirmers can ask for new validation codes.",
            409: "The request is not waiting for confirmation (`state`), or a confirmer's account is gone.",
            422: NOT_A_UUID,
        },
    ),
}
CANCEL = {
    **answer(200, ContactChangeRequest, "Cancelled; the request as it is now"),
    **problems(
        403,
        404,
        409,
        422,
        causes={
            403: "Only the requester can cancel a request.",
            409: "The request is no longer open (`state`).",
            422: NOT_A_UUID,
        },
    ),
}

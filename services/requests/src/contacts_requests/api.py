"""The HTTP API (spec section 6): JSON in and out, errors as RFC 9457 problem details.

Every route but the health checks needs an identity: the identity provider's JWT as a
Bearer header or in the session cookie. What a NIC is not party to answers 404. What the
OpenAPI document says of the routes beyond their signatures is declared in `api_docs`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

import asyncpg
import structlog
from contacts_shared.auth import TokenVerifier
from contacts_shared.contracts import RequestState, utcnow
from contacts_shared.db import MAYBE_OUTAGE_ERRORS, database_answers, is_database_outage
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from contacts_requests import (
    api_docs,
    batch_api,
    exports,
    handlers,
    support_api,
    support_docs,
    views,
)
from contacts_requests.api_access import Me, Pool
from contacts_requests.api_bodies import ContactChangeBody, TokenBody
from contacts_requests.api_docs import PROBLEM
from contacts_requests.batch_pages import install_batch_pages
from contacts_requests.domain import Refusal, may_view, not_found
from contacts_requests.identity import Identity
from contacts_requests.page_language import PageLanguage
from contacts_requests.pages import install_pages
from contacts_requests.rate_limits import RateLimits
from contacts_requests.support_pages import install_support_pages
from contacts_requests.web import (
    NotSignedIn,
    json_response,
    page_of,
    parse_cursor,
    parse_service_cursor,
    problem,
    services_page,
    status_of,
)

log = structlog.get_logger("contacts.requests.api")
# How long a caller is told to wait when the database is away (its outages end in seconds, or
# in a failover of about 2: docs/scaling.md).
DATABASE_RETRY_AFTER_SECONDS = 2
# What a text parameter may hold: no control character (PostgreSQL takes no NUL).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


def create_api(
    *,
    pool: asyncpg.Pool,
    jwt_secret: str,
    request_ttl: timedelta,
    dev_login: bool = False,
    ready: Callable[[], Awaitable[dict[str, bool]]] | None = None,
    verifier: TokenVerifier | None = None,
    rate_limits: RateLimits | None = None,
) -> FastAPI:
    """The API and the pages. Tokens are checked by `verifier` (by default HS256 under
    `jwt_secret`, which also keys the pages' CSRF tokens and the development sign-in)."""
    app = FastAPI(
        title="Contacts",
        version="1.0.0",
        description=api_docs.DESCRIPTION,
        license_info=api_docs.LICENSE,
        servers=api_docs.SERVERS,
        openapi_tags=[*api_docs.TAGS, support_docs.TAG],
        generate_unique_id_function=api_docs.operation_id,
    )
    api_docs.complete_document(app)
    app.state.pool = pool
    app.state.jwt_secret = jwt_secret
    app.state.verifier = verifier or TokenVerifier(jwt_secret)
    app.state.rate_limits = rate_limits = rate_limits or RateLimits()
    # Outermost first: who is calling, then whether they may reach the support desk at all.
    app.add_middleware(PageLanguage)  # a page's language: the signed-in account's (after Identity)
    app.add_middleware(support_api.SupportOnly)
    app.add_middleware(Identity, verifier=app.state.verifier)

    @app.exception_handler(Refusal)
    async def _refusal(_: Request, exc: Refusal) -> JSONResponse:
        return problem(status_of(exc), exc.title, exc.detail, field=exc.field, **exc.extra)

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(_: Request, exc: NotSignedIn) -> JSONResponse:
        return problem(401, "Not signed in", exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse(
            {"type": "about:blank", "title": "Invalid request", "status": 422, "detail": detail, "errors": errors},
            status_code=422,
            media_type=PROBLEM,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail))

    async def _database_away(request: Request, exc: Exception) -> JSONResponse:
        if not is_database_outage(exc):
            return await _unexpected(request, exc)
        # Lost at COMMIT, the work may have been done: the caller must not be told otherwise.
        log.warning("database unreachable", error=type(exc).__name__)
        unavailable = problem(503, "Database unavailable", api_docs.PROBLEM_CAUSES[503])
        unavailable.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return unavailable

    for error in MAYBE_OUTAGE_ERRORS:
        app.add_exception_handler(error, _database_away)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return problem(500, "Internal error", "Something went wrong on our side; nothing was changed. Try again.")

    # --- health ---------------------------------------------------------------------------

    # Routes returning a dict say `response_model=None`: their body is documented by `responses`
    # alone (the dicts are JSON already, and FastAPI encodes them the same way without a model).
    operations: dict[str, Any] = {"tags": ["operations"], "openapi_extra": api_docs.NO_SIGN_IN}
    changes: dict[str, Any] = {"tags": ["contact changes"]}

    @app.get("/healthz", summary="Alive", response_model=None, responses=api_docs.HEALTHZ, **operations)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Ready: the database and the broker answer", responses=api_docs.READYZ, **operations)
    async def readyz(db: Pool) -> JSONResponse:
        # The service's own check (`Runtime.ready`); an API built alone (tests) has no broker.
        checks = await ready() if ready else {"database": await database_answers(db), "broker": True}
        status = 200 if all(checks.values()) else 503
        return JSONResponse({"status": "ready" if status == 200 else "not ready", "checks": checks}, status_code=status)

    # --- contacts -------------------------------------------------------------------------------

    @app.get("/v1/me/contacts", tags=["contacts"], summary="Services where I am a contact, by service id", response_model=None, responses=api_docs.MY_CONTACTS)
    async def my_contacts(
        me: Me,
        db: Pool,
        role: Annotated[Literal["admin", "tech", "billing"] | None, Query(description="only where I hold this role")] = None,
        type_: Annotated[str | None, Query(alias="type", max_length=64, pattern=PRINTABLE, description="only services of this type (exact)")] = None,
        q: Annotated[str | None, Query(max_length=255, pattern=PRINTABLE, description="only services whose id contains this text, in any case")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=2000, description="the `next_cursor` of the page before")] = None,
    ) -> dict[str, Any]:
        after = parse_service_cursor(cursor) if cursor else None
        async with db.acquire() as conn:
            found = await views.my_contacts(conn, me, role=role, type_=type_ or None, text=q or None, after=after, limit=limit + 1)
        items, next_cursor = services_page(found, limit)
        return {"items": items, "next_cursor": next_cursor}

    @app.post(
        "/v1/services/{service:path}/contact-changes",
        status_code=202,
        summary="Ask to change one or more contacts of a service",
        responses=api_docs.SUBMIT,
        **changes,
    )
    async def submit(
        service: str,
        body: ContactChangeBody,
        me: Me,
        db: Pool,
        idempotency_key: Annotated[
            str | None, Header(max_length=200, description="Sent again with a submission, returns the same requests")
        ] = None,
    ) -> Response:
        # The views are read in the submission's transaction: one commit, not two.
        async with db.acquire() as conn, conn.transaction():
            ids = await handlers.submit(
                conn,
                requester=me,
                service_id=service,
                changes=body.changes(),
                idempotency_key=idempotency_key,
                request_ttl=request_ttl,
                rate_limits=rate_limits,
            )
            items = await views.request_views(conn, ids)
        return json_response({"items": items}, 202)

    @app.get("/v1/me/contact-changes", summary="Requests I am a party of, newest first", response_model=None, responses=api_docs.MY_REQUESTS, **changes)
    async def my_requests(
        me: Me,
        db: Pool,
        state: RequestState | None = None,
        role: Literal["requester", "from", "to"] | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        service: Annotated[str | None, Query(max_length=255, pattern=PRINTABLE, description="only the requests of this service (its exact id)")] = None,
    ) -> Response:
        before = parse_cursor(cursor) if cursor else None
        async with db.acquire() as conn:
            ids = await views.requests_of(
                conn, me, state=state.value if state else None, role=role, limit=limit + 1, before=before, service=service or None
            )
            items, next_cursor = await page_of(conn, ids, limit)
        return json_response({"items": items, "next_cursor": next_cursor})

    async def _visible_view(conn: asyncpg.Connection, request_id: uuid.UUID, me: str) -> dict[str, Any]:
        view = await views.request_view(conn, request_id)
        if view is None or not may_view(me, view["requester"], view["from"], view["to"]):
            raise not_found()
        return view

    @app.get("/v1/contact-changes/{request_id}", summary="One request, with its history", response_model=None, responses=api_docs.ONE_REQUEST, **changes)
    async def one_request(request_id: uuid.UUID, me: Me, db: Pool) -> Response:
        async with db.acquire() as conn:
            return json_response(await _visible_view(conn, request_id, me))

    def answering(accept: bool) -> Callable[..., Awaitable[Response]]:
        async def answer(request_id: uuid.UUID, body: TokenBody, me: Me, db: Pool) -> Response:
            view = await handlers.answer(
                db, request_id=request_id, nic=me, token=body.token, accept=accept, now=utcnow(), then=lambda conn: _visible_view(conn, request_id, me)
            )
            return json_response(view)

        return answer

    for action, accept, responses in (("accept", True, api_docs.ACCEPT), ("decline", False, api_docs.DECLINE)):
        summary = f"{action.capitalize()} with my token"
        app.post(f"/v1/contact-changes/{{request_id}}/{action}", name=action, summary=summary, response_model=None, responses=responses, **changes)(
            answering(accept)
        )

    @app.post(
        "/v1/contact-changes/{request_id}/resend", status_code=202, summary="Send new tokens to the confirmers who have not answered", responses=api_docs.RESEND, **changes
    )
    async def resend(request_id: uuid.UUID, me: Me, db: Pool) -> Response:
        async with db.acquire() as conn, conn.transaction():
            await handlers.resend(conn, request_id=request_id, nic=me, rate_limits=rate_limits)
            return json_response(await _visible_view(conn, request_id, me), 202)

    @app.post("/v1/contact-changes/{request_id}/cancel", summary="Cancel my open request", response_model=None, responses=api_docs.CANCEL, **changes)
    async def cancel(request_id: uuid.UUID, me: Me, db: Pool) -> Response:
        async with db.acquire() as conn, conn.transaction():
            await handlers.cancel(conn, request_id=request_id, nic=me)
            return json_response(await _visible_view(conn, request_id, me))

    app.include_router(exports.router)
    app.include_router(batch_api.router)
    app.include_router(support_api.router)
    install_pages(app, request_ttl=request_ttl, dev_login=dev_login)
    install_support_pages(app)
    install_batch_pages(app)
    return app

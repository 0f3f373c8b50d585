"""Who may call an operation of the API, as FastAPI dependencies: a signed-in NIC (`Me`), a
support agent (`Agent`), and the database pool (`Pool`)."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request, Security

from contacts_requests import api_docs
from contacts_requests.domain import not_found
from contacts_requests.identity import SESSION_COOKIE
from contacts_requests.web import SAFE_METHODS, NotSignedIn, current_nic

# The two ways in, for the OpenAPI document only: `current_nic` reads them itself.
_bearer, _session = api_docs.ways_in(SESSION_COOKIE)


async def _me(
    request: Request, _header: Annotated[Any, Security(_bearer)], _cookie: Annotated[Any, Security(_session)]
) -> str:
    # Dependencies are async so that FastAPI does not hop to a worker thread for each one.
    nic = current_nic(request)
    # A browser sends the session cookie with any cross-site form: a change through the API
    # needs the Bearer header, which no other site can make a browser send (the pages have
    # their own CSRF check).
    if request.state.by_cookie and request.method not in SAFE_METHODS:
        raise NotSignedIn("A change through the API needs the identity token as an `Authorization: Bearer` header; the session cookie is for the pages.")
    return nic


Me = Annotated[str, Depends(_me)]


async def _agent(request: Request, me: Me) -> str:
    # Anyone else is answered as if there were no such route (`support_api.SupportOnly` says so
    # before a body is even read).
    if not request.state.agent:
        raise not_found()
    return me


Agent = Annotated[str, Depends(_agent)]


async def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


Pool = Annotated[asyncpg.Pool, Depends(_pool)]

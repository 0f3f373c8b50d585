"""A person downloads the history of their requests (`GET /v1/me/contact-changes/export`): every
request they are a party of, as on "My requests", each with its history, in JSON or CSV.

Read a page of the keyset query at a time (a connection taken for each page and given back, so a
slow download holds none) and streamed: thousands of requests never sit in memory at once. The
first page is read before the answer starts, so that a database away is still answered 503."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import pydantic_core
import structlog
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from contacts_requests import export_docs, views
from contacts_requests.api_access import Me, Pool

log = structlog.get_logger("contacts.requests.exports")

router = APIRouter(tags=["contact changes"])

EXPORT_PAGE = 200  # requests read per statement
Page = tuple[list[dict[str, Any]], bool]  # the views of a page, and whether more may follow
MEDIA_TYPES = {"json": "application/json", "csv": f"{export_docs.CSV}; charset=utf-8"}
# What a spreadsheet would take for the start of a formula (OWASP's CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@router.get(
    "/v1/me/contact-changes/export",
    summary="Download the history of my requests (JSON or CSV)",
    response_model=None,
    responses=export_docs.EXPORT,
)
async def export(
    me: Me,
    db: Pool,
    format_: Annotated[Literal["json", "csv"], Query(alias="format", description="`json` (the default) or `csv`")] = "json",
) -> StreamingResponse:
    first = await _page(db, me, before=None)
    pages = _pages(db, me, first)
    body = _as_csv(pages) if format_ == "csv" else _as_json(pages)
    return StreamingResponse(
        body,
        media_type=MEDIA_TYPES[format_],
        headers={
            "Content-Disposition": f'attachment; filename="contact-requests-{me}.{format_}"',
            "Cache-Control": "no-store",
        },
    )


async def _page(db: asyncpg.Pool, nic: str, *, before: tuple[datetime, uuid.UUID] | None) -> Page:
    async with db.acquire() as conn:
        ids = await views.requests_of(conn, nic, state=None, role=None, limit=EXPORT_PAGE, before=before)
        return await views.request_views(conn, ids), len(ids) == EXPORT_PAGE


async def _pages(db: asyncpg.Pool, nic: str, first: Page) -> AsyncIterator[list[dict[str, Any]]]:
    """The pages of `nic`'s requests, newest first, from `first` (already read) on."""
    page, more = first
    while page:
        yield page
        if not more:
            return
        last = page[-1]
        page, more = await _page(db, nic, before=(last["created_at"], uuid.UUID(last["id"])))


async def _as_json(pages: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[str]:
    """`{"items": [...]}`, written as the pages come, encoded as the API's other answers are."""
    yield '{"items":['
    separator = ""
    async for page in pages:
        items = (pydantic_core.to_json(view).decode() for view in page)
        yield separator + ",".join(items)
        separator = ","
    yield "]}"


async def _as_csv(pages: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[str]:
    """A header row, then one row per line of each request's history."""
    yield _csv_rows([export_docs.CSV_COLUMNS])
    async for page in pages:
        yield _csv_rows(row for view in page for row in history_rows(view))


def history_rows(view: dict[str, Any]) -> Iterable[tuple[str, ...]]:
    """The CSV rows of one request: one per line of its history (export_docs.CSV_COLUMNS)."""
    request = (view["id"], view["service"], view["type"], view["from"], view["to"], view["requester"], view["state"])
    for line in view["history"]:
        at = pydantic_core.to_jsonable_python(line["at"])  # as the JSON answers write it
        yield tuple(_cell(v) for v in (*request, at, line["state"], line["actor"], line["reason"]))


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_rows(rows: Iterable[Iterable[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)  # RFC 4180: quoted where needed, lines ended by CRLF
    return out.getvalue()

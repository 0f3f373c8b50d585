"""What the OpenAPI document says of the download of my requests' history (`exports`):
declarations only, like `api_docs`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from contacts_requests.api_docs import ContactChangeRequest, answer, problems

CSV = "text/csv"
CSV_COLUMNS = ("request_id", "service", "type", "from", "to", "requester", "request_state", "at", "state", "actor", "reason")
CSV_EXAMPLE = (
    ",".join(CSV_COLUMNS) + "\r\n"
    "0b4c3a55-7d41-4f7e-9a3c-2f1d8e6b5a10,shop-example.web-hosting,tech,cc33333-ovh,bb22222-ovh,aa11111-ovh,done,"
    "2026-03-02T09:14:03.120000Z,checking,aa11111-ovh,\r\n"
)


class RequestHistory(BaseModel):
    items: list[ContactChangeRequest] = Field(
        description="every request I am a party of, newest first, each as `GET /v1/contact-changes/{request_id}` shows it"
    )


_AS_CSV = (
    "As `text/csv` (`format=csv`, RFC 4180 with a header row): one row per line of history, the request's "
    f"columns repeated on each ({', '.join(f'`{c}`' for c in CSV_COLUMNS)}); `request_state` is the request's "
    "state now, `state` the one that line of history entered. A cell that would start with `=`, `+`, `-` or "
    "`@` starts with `'` so that no spreadsheet takes it for a formula."
)
_DISPOSITION: dict[str, Any] = {
    "Content-Disposition": {
        "description": 'Always `attachment; filename="contact-requests-<my NIC>.json"` (or `.csv`)',
        "schema": {"type": "string"},
    }
}

EXPORT: dict[int | str, dict[str, Any]] = {
    **answer(
        200,
        RequestHistory,
        "The history of every request I am a party of (the same ones as `GET /v1/me/contact-changes`), "
        "as a file to save, streamed. As `application/json` (`format=json`, the default) the requests with their "
        f"history. {_AS_CSV}",
    ),
    **problems(422, causes={422: "Invalid `format`: `csv` or `json`."}),
}
EXPORT[200]["content"] = {CSV: {"schema": {"type": "string"}, "example": CSV_EXAMPLE}}
EXPORT[200]["headers"] = _DISPOSITION

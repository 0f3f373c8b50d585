"""The support desk's pages (`/support/...`)."""

from __future__ import annotations

from fastapi import FastAPI


def install_support_pages(app: FastAPI) -> None:
    pass

"""CONTACTS_RETENTION_DAYS is read by all three services: a whole number of days, at least 1,
30 by default; a malformed one stops a service at start with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from contacts_shared.settings import (
    BillingCheckSettings,
    NotifierSettings,
    RequestsSettings,
)

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("program", "value", "expected"),
    [
        ("contacts-requests", "0", "greater than or equal to 1"),
        ("contacts-billing-check", "thirty", "valid integer"),
        ("contacts-notifier", "1.5", "valid integer"),
    ],
)
def test_a_malformed_retention_stops_each_service_with_one_line(program: str, value: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")}
    env |= {"CONTACTS_JWT_SECRET": "x" * 32, "CONTACTS_TOKEN_SECRET": "t" * 32, "CONTACTS_RETENTION_DAYS": value}
    result = subprocess.run([str(BIN / program)], check=False, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{program}: setting CONTACTS_RETENTION_DAYS is invalid") and expected in lines[0], lines[0]


def test_the_retention_defaults_to_30_days(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CONTACTS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CONTACTS_JWT_SECRET", "x" * 32)
    monkeypatch.setenv("CONTACTS_TOKEN_SECRET", "t" * 32)
    for settings in (RequestsSettings, BillingCheckSettings, NotifierSettings):
        assert settings().retention_days == 30
    monkeypatch.setenv("CONTACTS_RETENTION_DAYS", "7")
    assert {s().retention_days for s in (RequestsSettings, BillingCheckSettings, NotifierSettings)} == {7}

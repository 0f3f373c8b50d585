"""Spec section 8: a missing or malformed setting stops a service at start with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("program", "settings", "expected"),
    [
        ("contacts-requests", {}, "contacts-requests: setting CONTACTS_JWT_SECRET is missing"),
        ("contacts-requests", {"CONTACTS_JWT_SECRET": "x" * 32, "CONTACTS_HTTP_PORT": "eighty"}, "CONTACTS_HTTP_PORT is invalid"),
        ("contacts-notifier", {"CONTACTS_SMTP_PORT": "99999"}, "CONTACTS_SMTP_PORT is invalid"),
        ("contacts-billing-check", {"CONTACTS_AMQP_URL": "http://nope"}, "CONTACTS_AMQP_URL is invalid"),
        ("contacts-notifier", {"CONTACTS_NAMESPACE": "Bad-Name"}, "CONTACTS_NAMESPACE is invalid"),
    ],
)
def test_bad_setting_stops_with_one_line(program: str, settings: dict[str, str], expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")} | settings
    result = subprocess.run([str(BIN / program)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr

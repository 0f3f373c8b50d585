"""Spec section 8: a missing or malformed setting stops a service at start with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from security.table import tried

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
    result = subprocess.run([str(BIN / program)], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


# Settings that make each service start in production (CONTACTS_ENV unset means production).
SAFE = {
    "contacts-requests": {"CONTACTS_JWT_SECRET": "s" * 32, "CONTACTS_PUBLIC_URL": "https://contacts.example.com"},
    "contacts-notifier": {"CONTACTS_TOKEN_SECRET": "t" * 32, "CONTACTS_PUBLIC_URL": "https://contacts.example.com"},
    "contacts-billing-check": {},
}


def start(program: str, settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `program` with only `settings` among CONTACTS_*. PostgreSQL's address is a closed
    port: a program that gets past its settings stops at its first connection."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")} | settings
    env.setdefault("CONTACTS_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    return subprocess.run([str(BIN / program)], env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    ("program", "unsafe", "setting"),
    [
        ("contacts-requests", {"CONTACTS_JWT_SECRET": "contacts-development-secret-not-for-production"}, "CONTACTS_JWT_SECRET"),
        ("contacts-requests", {"CONTACTS_JWT_SECRET": "x" * 31}, "CONTACTS_JWT_SECRET"),
        ("contacts-requests", {"CONTACTS_DEV_LOGIN": "true"}, "CONTACTS_DEV_LOGIN"),
        ("contacts-requests", {"CONTACTS_PUBLIC_URL": "http://contacts.example.com"}, "CONTACTS_PUBLIC_URL"),
        ("contacts-notifier", {"CONTACTS_PUBLIC_URL": "http://10.0.0.1:8000"}, "CONTACTS_PUBLIC_URL"),
        ("contacts-requests", {"CONTACTS_JWT_JWKS_URL": "http://idp.example.com/certs"}, "CONTACTS_JWT_JWKS_URL"),
        ("contacts-notifier", {"CONTACTS_TOKEN_SECRET": "contacts-development-token-key-not-for-production"}, "CONTACTS_TOKEN_SECRET"),
        ("contacts-billing-check", {"CONTACTS_CRASH_AT": "during-apply:1"}, "CONTACTS_CRASH_AT"),
    ],
)
def test_production_refuses_development_conveniences(program: str, unsafe: dict[str, str], setting: str) -> None:
    result = start(program, SAFE[program] | unsafe)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{program}: setting {setting} ") and "refused in production" in line
    tried(f"{program} started in production with {setting}={next(iter(unsafe.values()))[:48]}", "refuses to start: exit 2, one line naming the setting")


@pytest.mark.parametrize("public_url", ["https://contacts.example.com", "http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_production_starts_with_safe_settings(public_url: str) -> None:
    result = start("contacts-requests", SAFE["contacts-requests"] | {"CONTACTS_PUBLIC_URL": public_url})
    assert "Connection refused" in result.stderr and result.returncode != 2, result.stderr
    assert "development mode" not in result.stderr


def test_development_allows_them_and_says_so_once() -> None:
    unsafe = {"CONTACTS_ENV": "development", "CONTACTS_JWT_SECRET": "x" * 16, "CONTACTS_DEV_LOGIN": "1", "CONTACTS_PUBLIC_URL": "http://example.com"}
    result = start("contacts-requests", unsafe)
    assert "Connection refused" in result.stderr and result.returncode != 2, result.stderr
    assert result.stderr.count("development mode") == 1, result.stderr

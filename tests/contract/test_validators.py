"""The contract documents pass the third-party validators an outsider would run on them: Redocly
CLI lints docs/openapi.json (its recommended rules), the AsyncAPI CLI validates docs/asyncapi.yaml
(the specification and its governance rules), and Ajv, not the Python validator, compiles the
JSON Schemas and checks the examples against them.

The tools are pinned in tests/contract/validators/package-lock.json, the last versions that run
on Debian's Node.js 18 (newer @redocly/cli needs Node 20, newer @asyncapi/cli Node 24); React is
pinned there by `overrides`, without which npm's resolver spins for over 15 minutes on the React
ranges of the two CLIs. Their install scripts are off (validators/.npmrc): none is needed, and
two reach outside the folder. The first `npm ci` takes a minute or two (1.9 GB, mostly the
AsyncAPI CLI). They run offline: no usage data, no check for a newer version (see QUIET)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from contract.node import VALIDATORS, installed_from_lock
from support import ROOT

BIN = VALIDATORS / "node_modules" / ".bin"
QUIET = {
    "REDOCLY_TELEMETRY": "off",  # Redocly: no usage data
    "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",  # Redocly: no look-up of a newer version
    # AsyncAPI: analytics disabled in this file, as `asyncapi config analytics --disable` writes
    # it (in the home directory, by default, where the CLI would otherwise create it enabled).
    "ASYNCAPI_METRICS_CONFIG_PATH": str(VALIDATORS / "asyncapi-analytics.json"),
    "ASYNCAPI_SKIP_NEW_VERSION_CHECK": "true",  # AsyncAPI (oclif): no look-up of a newer version
    "NO_COLOR": "1",
}
# Warnings of Redocly's recommended rules we accept: the health checks have no 4xx to document.
ACCEPTED_LINT_WARNINGS = {
    ("operation-4xx-response", "#/paths/~1healthz/get/responses"),
    ("operation-4xx-response", "#/paths/~1readyz/get/responses"),
}


@pytest.fixture(scope="session")
def validators() -> Path:
    """The validators with their locked dependencies installed (`npm ci`, not run again while the
    lockfile is unchanged since the last install)."""
    return installed_from_lock(VALIDATORS)


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], check=False, cwd=ROOT, env={**os.environ, **QUIET}, capture_output=True, text=True, timeout=300
    )


def test_redocly_lints_the_openapi_document_without_errors(validators: Path) -> None:
    result = run(BIN / "redocly", "lint", "docs/openapi.json", "--format=json")
    report = json.loads(result.stdout)
    problems = [(p["severity"], p["ruleId"], p["location"][0]["pointer"], p["message"]) for p in report["problems"]]
    assert report["totals"]["errors"] == 0 and result.returncode == 0, f"{problems}\n{result.stderr}"
    warnings = {(rule, pointer) for severity, rule, pointer, _ in problems if severity == "warn"}
    assert warnings <= ACCEPTED_LINT_WARNINGS, f"new lint warnings: {warnings - ACCEPTED_LINT_WARNINGS}"


def test_asyncapi_validates_the_asyncapi_document_without_warnings(validators: Path) -> None:
    result = run(BIN / "asyncapi", "validate", "docs/asyncapi.yaml", "--fail-severity=warn")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "docs/asyncapi.yaml is valid!" in output and "don't have governance issues" in output, output
    assert "warn" not in output.lower(), output


def test_ajv_compiles_every_schema_in_strict_mode_and_accepts_exactly_the_examples(validators: Path) -> None:
    result = run("node", VALIDATORS / "validate-schemas.mjs")
    *findings, summary = result.stdout.splitlines()
    assert result.returncode == 0 and not findings, f"{result.stdout}\n{result.stderr}"
    counted = len(list((ROOT / "docs" / "schemas").glob("*.json")))
    assert json.loads(summary) == {"schemas": counted, "examples": counted, "bad_refused": 6, "failures": 0}

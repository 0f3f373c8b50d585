"""Node.js packages of the tests (the example publisher, the contract validators), installed from
their lockfiles.

On a fresh machine `npm ci` of the validators takes one to two minutes, mostly downloading: the
install starts in the background as soon as the tests that need it are collected
(tests/contract/conftest.py), and those tests wait for it when their turn comes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
VALIDATORS = _HERE / "validators"
NODE_EXAMPLE = _HERE.parents[1] / "examples" / "node-publisher"
# Which package each fixture installs, for the install to begin when its tests are collected.
PACKAGE_OF_FIXTURE = {"validators": VALIDATORS, "node_example": NODE_EXAMPLE}

# The installs under way: package -> (npm ci, the file its output goes to).
_installing: dict[Path, tuple[subprocess.Popen, Path]] = {}


def _lock_digest(package: Path) -> str:
    return hashlib.sha256((package / "package-lock.json").read_bytes()).hexdigest()


def _stamp(package: Path) -> Path:
    return package / "node_modules" / ".installed-from-lock"


def begin_install(package: Path) -> None:
    """Start `npm ci` in `package` in the background, unless its lockfile is the one installed
    last (so that a second run costs nothing) or it is under way already, or npm is missing
    (`installed_from_lock` says so)."""
    stamp = _stamp(package)
    npm = shutil.which("npm")
    if package in _installing or (stamp.exists() and stamp.read_text() == _lock_digest(package)) or not npm:
        return
    descriptor, name = tempfile.mkstemp(prefix="npm-ci-", suffix=".log")
    os.close(descriptor)
    output = Path(name)
    with output.open("wb") as out:  # a file, not a pipe: nobody reads it until npm is done
        process = subprocess.Popen(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=package, stdout=out, stderr=subprocess.STDOUT
        )
    _installing[package] = (process, output)


def installed_from_lock(package: Path, timeout: float = 900) -> Path:
    """`package` with its locked dependencies installed: waits for the install `begin_install`
    started (or starts it)."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.fail("node and npm are not installed: apt-get install nodejs npm (scripts/test does it as root)")
    begin_install(package)
    if package in _installing:
        process, output = _installing.pop(package)
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        text = output.read_text(errors="replace")
        output.unlink()
        assert status == 0, f"npm ci failed in {package}:\n{text}"
        _stamp(package).write_text(_lock_digest(package))
    return package

"""Node.js packages of the tests (the example publisher, the contract validators), installed from
their lockfiles."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest


def installed_from_lock(package: Path, timeout: float = 900) -> Path:
    """`package` with its locked dependencies installed (`npm ci`, not run again while the
    lockfile is unchanged since the last install, so the suite stays fast)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are not installed: apt-get install nodejs npm (scripts/test does it as root)")
    lock_digest = hashlib.sha256((package / "package-lock.json").read_bytes()).hexdigest()
    stamp = package / "node_modules" / ".installed-from-lock"
    if not stamp.exists() or stamp.read_text() != lock_digest:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            check=False,
            cwd=package,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"npm ci failed in {package}:\n{result.stdout}\n{result.stderr}"
        stamp.write_text(lock_digest)
    return package

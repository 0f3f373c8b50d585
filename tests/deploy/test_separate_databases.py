"""The three services share no table, so each schema may live on a PostgreSQL server of its own
(one CONTACTS_DATABASE_URL each): the claim, tested. The whole end-to-end suite runs, unchanged,
with the requests schema on the machine's server and the billing check's and the notifier's on
two servers started here; each server must have done its service's work."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from own_nodes import OwnPostgres, chown, postgres_bin_dir
from support import ARTIFACTS, ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APART = ("billing_check", "notifier")  # requests stays on the main test database


@pytest.fixture
def servers() -> Iterator[dict[str, OwnPostgres]]:
    """A PostgreSQL server of its own for each schema of APART."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail("this test needs PostgreSQL's server binaries: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="contacts-apart-"))
    os.chmod(root, 0o755)
    started: dict[str, OwnPostgres] = {}
    try:
        for schema in APART:
            directory = root / schema
            directory.mkdir()
            chown(directory, "postgres")
            started[schema] = OwnPostgres(directory, free_port(), bin_dir)
            started[schema].start()
        yield started
    finally:
        for server in started.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def committed(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    finally:
        await conn.close()


@pytest.mark.timeout(1200)
async def test_the_end_to_end_suite_passes_with_the_schemas_on_three_servers(servers: dict[str, OwnPostgres]) -> None:
    before = {schema: await committed(server.url) for schema, server in servers.items()}
    env = {**os.environ, "CONTACTS_TEST_SERVICE_DATABASES": ",".join(f"{s}={server.url}" for s, server in servers.items())}
    command = [sys.executable, "-m", "pytest", "tests/e2e", "-q", "-p", "no:cacheprovider"]
    collected = await asyncio.to_thread(subprocess.run, [*command, "--collect-only"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    tests = int(re.findall(r"(\d+) tests? collected", collected.stdout)[-1])
    run = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1100, check=False)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert tests > 40 and re.match(rf"{tests} passed in ", summary), summary
    work = {schema: await committed(server.url) - before[schema] for schema, server in servers.items()}
    report = ARTIFACTS / "separate-databases.txt"
    report.parent.mkdir(exist_ok=True)
    report.write_text(f"{summary}\ntransactions committed on each schema's own server: {work}\n")
    for schema, transactions in work.items():
        # Every message a service handled is at least one transaction on its own server.
        assert transactions > 500, f"{schema}'s server committed only {transactions} transactions: the service did not use it"

"""The README's two commands are what a newcomer and CI run: CI calls exactly the test command;
the test command checks for what the tests need and names how to install what is missing;
nothing is skipped silently; CONTACTS_TEST_INFRA picks where PostgreSQL and RabbitMQ come from.
(`./scripts/dev`, the run command, has its own test: tests/deploy/test_dev_script.py.)"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "samples"


def docker_engine_problem() -> str | None:
    """The root conftest's own answer (loaded by path: `conftest` names tests/conftest.py here)."""
    spec = importlib.util.spec_from_file_location("contacts_root_conftest", ROOT / "conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.docker_engine_problem()


def readme_command(title: str) -> str:
    """The indented command that follows the README's bold `title`."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"\*\*{re.escape(title)}\*\*.*?\n\n    (\S[^\n]*)\n", readme, re.DOTALL)
    assert match, f"the README has no command under **{title}**"
    return match[1]


def commands_of(script: Path) -> list[str]:
    return [line for line in script.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_opens_with_its_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme_command("Run the whole system") == "./scripts/dev"
    assert readme_command("Run the tests") == "./scripts/test"
    first_command = re.search(r"\n\n    (\S[^\n]*)\n", readme)
    assert first_command and first_command[1] == "./scripts/dev", "the run command comes first"


def test_ci_calls_exactly_the_readme_test_command() -> None:
    (command,) = commands_of(ROOT / ".ci" / "run")
    # `cd` to the checkout, then nothing but the README's command.
    assert command == f'cd "$(dirname "$0")/.." && exec {readme_command("Run the tests")}'


def test_the_test_command_names_the_install_of_what_is_missing(tmp_path: Path) -> None:
    """Without root, a machine with none of the tools: the command to run is printed, nothing
    stops (the tests that need them then fail naming it too)."""
    empty = tmp_path / "bin"  # a PATH where nothing is installed
    empty.mkdir()
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    as_user = [runuser, "-u", "nobody", "--"] if os.geteuid() == 0 else []
    result = subprocess.run(
        [*as_user, "/bin/bash", str(ROOT / "scripts" / "ensure-test-tools")],
        env={"PATH": str(empty), "CONTACTS_CHROMIUM": str(tmp_path / "no-chromium")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "missing: chromium docker-compose nodejs npm amqp-tools jq" in result.stderr
    assert "apt-get update && apt-get install -y --no-install-recommends chromium docker-compose nodejs npm amqp-tools jq" in result.stderr


def _pytest(sample: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(SAMPLES / sample)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_skipped_test_fails_the_run() -> None:
    result = _pytest("skips_one.py")
    assert result.returncode == 1, result.stdout
    assert "1 skipped: the default run skips nothing, so this run fails" in result.stdout
    assert "something this machine lacks" in result.stdout  # the reason is shown


def test_local_infrastructure_by_default() -> None:
    result = _pytest("passes.py", CONTACTS_TEST_INFRA="local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"infrastructure (local): PostgreSQL {os.environ['CONTACTS_TEST_DATABASE_URL']}" in result.stdout


def test_containers_when_asked() -> None:
    """With a Docker engine the run gets PostgreSQL and RabbitMQ from testcontainers; without one
    it stops at once, saying why, instead of falling back to something else."""
    problem = docker_engine_problem()
    result = _pytest("passes.py", CONTACTS_TEST_INFRA="containers")
    if problem is None:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "infrastructure (containers)" in result.stdout
    else:
        assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
        assert f"CONTACTS_TEST_INFRA=containers needs a Docker engine, and {problem}" in result.stderr


def test_an_unknown_infrastructure_is_refused() -> None:
    result = _pytest("passes.py", CONTACTS_TEST_INFRA="cloud")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "CONTACTS_TEST_INFRA='cloud': expected one of local, containers" in result.stderr


def test_the_readme_says_how_to_use_testcontainers() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "CONTACTS_TEST_INFRA=containers ./scripts/test" in readme
    assert shlex.split(readme_command("Run the tests")) == ["./scripts/test"]

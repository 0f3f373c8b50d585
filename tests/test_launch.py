"""A service forked by the tests' fork server (tests/launch.py) behaves as its console script:
the same environment, the same output, the same exit status, its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest
from launch import BIN, PROGRAMS, Forked, launch
from support import eventually


def _env(**settings: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")}, **settings}


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_forked_service_reads_its_own_environment_and_exits_as_the_script(program: str, tmp_path) -> None:
    env = _env(CONTACTS_JWT_SECRET="x" * 32, CONTACTS_TOKEN_SECRET="t" * 32, CONTACTS_RETENTION_DAYS="zero")
    script = subprocess.run([str(BIN / program)], check=False, env=env, capture_output=True, text=True, timeout=30)

    forked = launch(program, env, tmp_path / "forked.log")
    assert isinstance(forked, Forked)
    assert forked.wait(timeout=30) == script.returncode == 2
    assert (tmp_path / "forked.log").read_text() == script.stdout + script.stderr


async def test_a_forked_service_leads_its_own_group_and_a_kill_shows_as_a_signal(tmp_path) -> None:
    # A "database" that takes the connection and never answers: the service waits at its start,
    # alive until the kill (a refused connection would let it exit with 1 first, a race).
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        env = _env(CONTACTS_ENV="development", CONTACTS_DATABASE_URL=f"postgresql://nobody@127.0.0.1:{port}/none")
        forked = launch("contacts-billing-check", env, tmp_path / "forked.log")
        assert isinstance(forked, Forked)
        # setsid() is the child's first step: its group is its own once it runs.
        await eventually(lambda: _leads_its_group(forked.pid), timeout=10, what="the child to lead its group")
        assert forked.poll() is None, (tmp_path / "forked.log").read_text()
        os.killpg(forked.pid, signal.SIGKILL)
        assert forked.wait(timeout=10) == -signal.SIGKILL
        assert forked.poll() == -signal.SIGKILL


async def _leads_its_group(pid: int) -> bool:
    return os.getpgid(pid) == pid


@pytest.mark.parametrize("setting", ["CONTACTS_CRASH_AT", "LD_PRELOAD"])
def test_what_a_fork_cannot_honour_is_started_from_the_script(setting: str, tmp_path) -> None:
    # A crash point is read at import, a preloaded library at exec: the fork server's copy has neither.
    env = _env(**{setting: "after-commit-before-ack:1" if setting == "CONTACTS_CRASH_AT" else ""})
    process = launch("contacts-notifier", env, tmp_path / "script.log")
    assert isinstance(process, subprocess.Popen)
    assert process.wait(timeout=30) == 2  # no secrets: it stops at its settings, as the script does

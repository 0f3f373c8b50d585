"""Starting the services' processes for the tests: forked from a server that has imported them
once, instead of a fresh interpreter importing FastAPI, FastStream, pydantic and the contracts
again for every process.

Importing a service costs 2-3 s of CPU and the suite starts hundreds of service processes on two
cores: the imports alone were a third of its time. A child of the fork server runs the service's
own entry point (`main()`, what its console script calls) in a session of its own, with exactly
the environment it is given and its output in its log file, and exits as the script would; only
the interpreter's start and the imports are skipped.

A process is still started from its console script when a fork could not honour its
environment: a crash point armed (`CONTACTS_CRASH_AT` is read once, at import), a library
preloaded into it (`LD_PRELOAD`, libfaketime's clock), or `CONTACTS_TEST_LAUNCH=exec` for the
whole run (the suite's own check that the scripts behave the same).

The server (`python launch.py`) reads one JSON request per line on stdin, `{"program", "env",
"log"}`, and answers on stdout `{"started": pid}` for each, then `{"exited": pid, "code": n}`
when that child ends (`n` as `Popen.returncode`: negative for a signal). It ends at EOF.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from contacts_tools.commands import SERVICE_PROGRAMS as PROGRAMS

BIN = Path(sys.executable).parent
# Settings a fork cannot honour: they act when the interpreter starts or a module is imported.
NEEDS_EXEC = ("CONTACTS_CRASH_AT", "LD_PRELOAD", "FAKETIME")


def _entry_point(program: str) -> tuple[str, str]:
    """(module, function) of a console script of this workspace."""
    (found,) = entry_points(group="console_scripts", name=program)
    module, _, function = found.value.partition(":")
    return module, function


# --- the test side ---------------------------------------------------------------------------------


class Forked:
    """A service process forked by the server, answering the calls of `subprocess.Popen` the
    tests make."""

    def __init__(self, server: _Server, pid: int) -> None:
        self._server = server
        self.pid = pid

    @property
    def returncode(self) -> int | None:
        return self._server.codes.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self._server.changed:
            if not self._server.changed.wait_for(lambda: self.pid in self._server.codes, timeout):
                raise subprocess.TimeoutExpired(f"process {self.pid}", timeout or 0)
        return self._server.codes[self.pid]

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # an ended process's pid may be someone else's by now
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


# What `launch` returns: either kind answers the same calls.
Process = subprocess.Popen | Forked


class _Server:
    """The fork server as this process sees it: a request pipe, and a thread reading its answers."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_") and k not in NEEDS_EXEC}
        self.process = subprocess.Popen(
            [sys.executable, __file__], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.codes: dict[int, int] = {}
        self.changed = threading.Condition()
        self.started: list[int] = []
        self.lock = threading.Lock()  # one request at a time: answers come back in order
        threading.Thread(target=self._read, daemon=True, name="fork-server").start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            answer = json.loads(line)
            with self.changed:
                if "started" in answer:
                    self.started.append(answer["started"])
                else:
                    self.codes[answer["exited"]] = answer["code"]
                self.changed.notify_all()

    def fork(self, program: str, env: dict[str, str], log_path: Path) -> Forked:
        assert self.process.stdin is not None
        with self.lock, self.changed:
            self.process.stdin.write(json.dumps({"program": program, "env": env, "log": str(log_path)}) + "\n")
            self.process.stdin.flush()
            if not self.changed.wait_for(lambda: self.started, timeout=30):
                raise RuntimeError(f"the fork server did not start {program} (exit status {self.process.poll()})")
            return Forked(self, self.started.pop(0))


_server: _Server | None = None


def launch(program: str, env: dict[str, str], log_path: Path) -> Process:
    """Start service `program` with exactly `env`, its output appended to `log_path`, in a
    session of its own."""
    global _server
    if program not in PROGRAMS or os.environ.get("CONTACTS_TEST_LAUNCH") == "exec" or any(k in env for k in NEEDS_EXEC):
        with open(log_path, "ab") as log:
            return subprocess.Popen([str(BIN / program)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if _server is None or _server.process.poll() is not None:
        _server = _Server()
    return _server.fork(program, env, log_path)


# --- the server side -------------------------------------------------------------------------------


def _child(program: str, env: dict[str, str], log_path: str) -> None:
    """In the forked child: be `BIN/program` run with `env` and its output in `log_path`; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(devnull)
        os.close(log)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = [str(BIN / program)]
        module, function = _entry_point(program)
        code = getattr(importlib.import_module(module), function)() or 0
    except SystemExit as exc:  # as the interpreter turns `sys.exit(...)` into an exit status
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - printed, as an uncaught exception would be
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _serve() -> None:
    for program in PROGRAMS:
        importlib.import_module(_entry_point(program)[0])
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd hears it
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    pending = b""

    def answer(message: dict) -> None:
        os.write(1, (json.dumps(message) + "\n").encode())

    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                os.read(wake_r, 512)
                with contextlib.suppress(ChildProcessError):
                    while (ended := os.waitpid(-1, os.WNOHANG))[0]:
                        answer({"exited": ended[0], "code": os.waitstatus_to_exitcode(ended[1])})
                continue
            if not (chunk := os.read(0, 1 << 16)):
                return  # the tests are over
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                request = json.loads(line)
                if (pid := os.fork()) == 0:
                    selector.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    _child(request["program"], request["env"], request["log"])
                answer({"started": pid})


if __name__ == "__main__":
    _serve()

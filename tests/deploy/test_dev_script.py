"""The README's run command works as a newcomer uses it: `./scripts/dev` starts the services, the
mail sink and the demo data, and its own output is all one needs to walk the seed's story (the
API's address, the mail inbox, how to get a user's JWT) to the applied change; Ctrl-C stops
everything cleanly.

It runs in a namespace and on ports of its own, so it neither meets nor disturbs a `scripts/dev`
a developer may have running."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from launch import BIN
from support import (
    ARTIFACTS,
    ROOT,
    TOKEN_LINK,
    drop_namespace,
    eventually,
    free_port,
)

pytestmark = pytest.mark.e2e

HOSTING = "shop-example.web-hosting"
OWNER, WEBMASTER = "aa11111-ovh", "bb22222-ovh"
OWNER_MAIL, WEBMASTER_MAIL, AGENCY_MAIL = "owner@shop-example.test", "webmaster@shop-example.test", "tech@web-agency.test"


@dataclass
class DevSession:
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    def find(self, pattern: str) -> re.Match[str] | None:
        return next((m for line in self.lines if (m := re.search(pattern, line))), None)

    async def wait_for(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        async def seen() -> re.Match[str] | None:
            if self.process.returncode is not None:
                raise AssertionError(f"scripts/dev exited ({self.process.returncode}):\n" + "\n".join(self.lines))
            return self.find(pattern)

        return await eventually(seen, timeout=timeout, what=f"scripts/dev to print {pattern!r}", interval=0.1)


async def _pump(stream: asyncio.StreamReader, session: DevSession, log: Any) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        session.lines.append(text)
        log.write(text + "\n")
        log.flush()


@pytest.fixture
async def dev(infrastructure: tuple[str, str]) -> AsyncIterator[DevSession]:
    database_url, amqp_url = infrastructure
    namespace = f"t{uuid.uuid4().hex[:10]}_"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONTACTS_")},
        # A newcomer's shell has the project's virtual environment's programs only through uv.
        "PATH": os.environ["PATH"].replace(f"{BIN}{os.pathsep}", ""),
        "CONTACTS_DATABASE_URL": database_url,
        "CONTACTS_AMQP_URL": amqp_url,
        "CONTACTS_NAMESPACE": namespace,
        "CONTACTS_HTTP_PORT": str(free_port()),
    }
    ports = ["--smtp-port", str(free_port()), "--inbox-port", str(free_port())]
    process = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "dev"),
        *ports,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, as a terminal gives it
    )
    session = DevSession(process)
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "scripts-dev.log", "w") as log:  # noqa: ASYNC230 - once, before the process runs
        assert process.stdout is not None
        pump = asyncio.create_task(_pump(process.stdout, session, log))
        try:
            yield session
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            await pump
            await drop_namespace(database_url, amqp_url, namespace)


async def _inbox(inbox_url: str, to: str, subject: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{inbox_url}/api/messages", params={"to": to})
        return [m for m in response.json() if m["subject"].startswith(subject)]


async def test_scripts_dev_runs_the_seed_story_from_its_own_output(dev: DevSession) -> None:
    # What it prints: where the API and the inbox are, how to get a JWT; then the demo data.
    api_url = (await dev.wait_for(r"API \(try it out\):\s+(http://\S+)/docs"))[1]
    inbox_url = (await dev.wait_for(r"Mail inbox:\s+(http://\S+)"))[1]
    secret = (await dev.wait_for(r"A user's JWT:\s+CONTACTS_JWT_SECRET=(\S+) contacts token"))[1]
    await dev.wait_for("the services are up")
    await dev.wait_for(r"payment_method\.upserted .*pm-webmaster-sepa")

    def jwt(nic: str) -> dict[str, str]:
        token = subprocess.run(
            [str(BIN / "contacts"), "token", nic],
            env={**os.environ, "CONTACTS_JWT_SECRET": secret},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"Authorization": f"Bearer {token}"}

    owner, webmaster = jwt(OWNER), jwt(WEBMASTER)
    async with httpx.AsyncClient(base_url=api_url, trust_env=False, timeout=15) as api:

        async def owner_contacts() -> dict[str, Any] | None:
            response = await api.get("/v1/me/contacts", headers=owner)
            return next((s for s in response.json()["items"] if s["service"] == HOSTING), None)

        assert (await eventually(owner_contacts, what="the demo hosting plan"))["contacts"]["tech"] == "cc33333-ovh"

        submitted = await api.post(f"/v1/services/{HOSTING}/contact-changes", json={"tech": WEBMASTER}, headers=owner)
        assert submitted.status_code == 202, submitted.text
        (item,) = submitted.json()["items"]
        request_id = item["id"]

        for who, address in ((webmaster, WEBMASTER_MAIL), (owner, OWNER_MAIL)):
            (mail,) = await eventually(lambda a=address: _inbox(inbox_url, a, "Please confirm"), what=f"{address}'s code")
            link = TOKEN_LINK.search(mail["text"])
            assert link and link[1] == request_id, mail["text"]
            accepted = await api.post(f"/v1/contact-changes/{request_id}/accept", json={"token": link[2]}, headers=who)
            assert accepted.status_code == 200, accepted.text

        async def done() -> dict[str, Any] | None:
            view = (await api.get(f"/v1/contact-changes/{request_id}", headers=owner)).json()
            return view if view["state"] == "done" else None

        await eventually(done, what="the change to be done")
        assert (await owner_contacts() or {})["contacts"]["tech"] == WEBMASTER
        for address in (OWNER_MAIL, WEBMASTER_MAIL, AGENCY_MAIL):
            await eventually(lambda a=address: _inbox(inbox_url, a, f"Contact change done for {HOSTING}"), what=f"{address}'s outcome")

    # Ctrl-C: everything stops, and says so. `uv run` may report the interrupt as 130, the
    # shell's status for a program ended by Ctrl-C; a service that died would make it 1.
    os.killpg(dev.process.pid, signal.SIGINT)
    assert await asyncio.wait_for(dev.process.wait(), timeout=30) in (0, 130), "\n".join(dev.lines)
    assert dev.find(r"^contacts +\| stopped$"), "\n".join(dev.lines)
    assert not dev.find("exited unexpectedly"), "\n".join(dev.lines)

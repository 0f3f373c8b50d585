"""The system under load: the three services as processes (started as the e2e tests start
them), a mail sink whose arrivals are tracked per request, the seeded services, and the
driver of complete flows (submit, token emails, two accepts, done emails) as users do them.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
from contacts_shared.contracts import AccountUpserted, ServiceUpserted, Zone
from contacts_tools.mail_store import StoredMail
from contacts_tools.mailsink import MailSink

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import (
    SCHEMAS,
    TOKEN_LINK,
    System,
    drop_namespace,
    eventually,
    free_port,
    service_env,
    start,
    stop,
)

CEILING_SUBJECT = "bench ceiling"
TOKEN_SUBJECT = "please confirm"
DONE_SUBJECT = "contact change done"
HEADS_UP_SUBJECT = "heads-up"  # to the technical contact being replaced, when the codes go out
_REQUEST_ID = re.compile(rb"X-Contacts-Request-Id: ([0-9a-f-]{36})", re.IGNORECASE)
# A batch's email (one code for all its requests): its arrivals are kept under the batch's id.
BATCH_LINK = re.compile(r"/batches/([0-9a-f-]{36})\?token=([A-Za-z0-9_\-%]+)")


async def concurrently(count: int, workers: int, operation: Callable[[], Awaitable[object]]) -> None:
    """`operation` `count` times, by `workers` running side by side, each starting the next as
    soon as its last is done (a closed loop)."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await operation()

    await asyncio.gather(*(worker() for _ in range(workers)))


def database_url_for(admin_url: str, database: str) -> str:
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


# --- processes ---------------------------------------------------------------------------------


class ProcessMeter:
    """CPU seconds and memory of processes from /proc (Linux), between two readings."""

    TICKS = os.sysconf("SC_CLK_TCK")

    # The parts every flow also runs on, found by their process names: their CPU per flow is
    # what the combined ceiling prices, and the bench's own (client, sink) shares the machine.
    PARTS: ClassVar[dict[str, tuple[str, ...]]] = {"postgresql": ("postgres",), "rabbitmq": ("beam.smp",)}

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "bench": os.getpid()}
        self._start: dict[str, float] = {}
        self._parts_start: dict[str, dict[int, float]] = {}
        self._machine_start = (0.0, 0.0)
        self._t0 = 0.0

    @classmethod
    def parts_cpu(cls) -> dict[str, dict[int, float]]:
        """CPU seconds of every process of each part, by pid (processes come and go)."""
        found: dict[str, dict[int, float]] = {part: {} for part in cls.PARTS}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/comm") as f:
                    comm = f.read().strip()
                part = next((p for p, names in cls.PARTS.items() if comm in names), None)
                if part:
                    found[part][int(entry.name)] = cls.cpu_seconds(int(entry.name))
            except OSError:
                continue  # gone meanwhile
        return found

    @classmethod
    def cpu_seconds(cls, pid: int) -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / cls.TICKS  # utime + stime

    @staticmethod
    def memory_mb(pid: int) -> tuple[float, float]:
        """(resident now, peak resident) in MiB."""
        values = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024
        return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)

    @staticmethod
    def machine() -> tuple[float, float]:
        """(busy, total) jiffies of the whole machine."""
        with open("/proc/stat") as f:
            numbers = [int(x) for x in f.readline().split()[1:]]
        idle = numbers[3] + numbers[4]
        return sum(numbers) - idle, sum(numbers)

    def begin(self) -> None:
        self._t0 = time.perf_counter()
        self._start = {name: self.cpu_seconds(pid) for name, pid in self.pids.items()}
        self._parts_start = self.parts_cpu()
        self._machine_start = self.machine()

    def end(self) -> dict[str, dict[str, float]]:
        elapsed = time.perf_counter() - self._t0
        busy, total = self.machine()
        report: dict[str, dict[str, float]] = {}
        for name, pid in self.pids.items():
            rss, peak = self.memory_mb(pid)
            cpu = self.cpu_seconds(pid) - self._start[name]
            report[name] = {"cpu_seconds": round(cpu, 2), "cpu_percent": round(100 * cpu / elapsed, 1), "rss_mb": round(rss, 1), "peak_rss_mb": round(peak, 1)}
        for part, now in self.parts_cpu().items():
            start = self._parts_start.get(part, {})
            cpu = sum(seconds - start.get(pid, 0.0) for pid, seconds in now.items())
            report[part] = {"cpu_seconds": round(cpu, 2), "cpu_percent": round(100 * cpu / elapsed, 1), "processes": len(now)}
        cores = os.cpu_count() or 1
        report["machine"] = {
            "cpu_percent": round(100 * cores * (busy - self._machine_start[0]) / max(1, total - self._machine_start[1]), 1),
            "cores": cores,
            "load_1m": round(os.getloadavg()[0], 2),
        }
        return report


# --- mail arrivals -------------------------------------------------------------------------------


@dataclass
class Arrivals:
    tokens: dict[str, str] = field(default_factory=dict)  # nic -> token
    token_at: list[float] = field(default_factory=list)
    done_to: set[str] = field(default_factory=set)
    heads_up_to: set[str] = field(default_factory=set)
    done_at: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MailTracker:
    """Arrivals at the sink by request id, stamped as they come in."""

    def __init__(self) -> None:
        self.requests: dict[str, Arrivals] = {}
        self.unexpected: list[str] = []
        self.ceiling_mails = 0
        self.received = 0

    def on_message(self, mail: StoredMail) -> None:  # called by the sink, served in this loop
        self._arrived(mail, time.perf_counter())

    def _arrived(self, mail: StoredMail, at: float) -> None:
        self.received += 1
        subject = mail.subject.lower()
        if subject.startswith(CEILING_SUBJECT):
            self.ceiling_mails += 1
            return
        found = _REQUEST_ID.search(mail.raw)
        nic = mail.rcpt_tos[0].split("@", 1)[0] if mail.rcpt_tos else "?"
        if found is None:
            self.unexpected.append(f"mail without request id: {mail.subject!r}")
            return
        arrivals = self.requests.setdefault(found.group(1).decode(), Arrivals())
        if subject.startswith(TOKEN_SUBJECT):
            link = TOKEN_LINK.search(mail.text) or BATCH_LINK.search(mail.text)
            if link is None:
                self.unexpected.append(f"token mail without link to {nic}")
                return
            arrivals.tokens[nic] = link.group(2)
            arrivals.token_at.append(at)
        elif subject.startswith(DONE_SUBJECT):
            arrivals.done_to.add(nic)
            arrivals.done_at.append(at)
        elif subject.startswith(HEADS_UP_SUBJECT):
            arrivals.heads_up_to.add(nic)
        else:
            self.unexpected.append(f"unexpected mail to {nic}: {mail.subject!r}")
        arrivals.changed.set()

    async def wait(self, request_id: str, ready: Callable[[Arrivals], bool], timeout: float, what: str) -> Arrivals:
        arrivals = self.requests.setdefault(request_id, Arrivals())
        deadline = time.perf_counter() + timeout
        while not ready(arrivals):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise FlowError(f"timed out after {timeout}s waiting for {what} of request {request_id}")
            arrivals.changed.clear()
            try:
                await asyncio.wait_for(arrivals.changed.wait(), remaining)
            except TimeoutError:
                pass
        return arrivals

    def forget(self, request_id: str) -> None:
        self.requests.pop(request_id, None)


# --- the system and its seeded services -------------------------------------------------------------


@dataclass
class BenchService:
    name: str
    admin: str
    tech_a: str
    tech_b: str
    billing: str
    tech: str = ""

    def __post_init__(self) -> None:
        self.tech = self.tech or self.tech_a

    @property
    def other_tech(self) -> str:
        return self.tech_b if self.tech == self.tech_a else self.tech_a


def bench_services(count: int) -> list[BenchService]:
    return [BenchService(f"svc{i}.bench.example", f"ad{i}-bench", f"ta{i}-bench", f"tb{i}-bench", f"bi{i}-bench") for i in range(count)]


@dataclass
class Bench:
    system: System
    admin_url: str
    database: str
    tracker: MailTracker
    services: list[BenchService]

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.system.processes.items()}

    async def connect(self, schema: str | None = None) -> asyncpg.Connection:
        settings = {"search_path": f"{self.system.namespace}{schema}"} if schema else None
        return await asyncpg.connect(self.system.database_url, server_settings=settings)


async def start_bench(
    admin_url: str, amqp_url: str, log_dir: Path, service_count: int, extra_env: dict[str, str], *, auto_explain: bool = False
) -> Bench:
    """A fresh database, sink, namespace and the three services, seeded with `service_count`
    services (and their accounts) published as other systems publish them."""
    namespace = f"b{uuid.uuid4().hex[:8]}_"
    database = f"contacts_bench_{namespace.rstrip('_')}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{database}"')
        if auto_explain:  # every plan of every statement, in the server's log (diagnostics only)
            await conn.execute(f"ALTER DATABASE \"{database}\" SET session_preload_libraries = 'auto_explain'")
            await conn.execute(f'ALTER DATABASE "{database}" SET auto_explain.log_min_duration = 0')
    finally:
        await conn.close()
    tracker = MailTracker()
    http_port, smtp_port, inbox_port = free_port(), free_port(), free_port()
    sink = MailSink("127.0.0.1", smtp_port, inbox_port, on_message=tracker.on_message)
    await sink.start_in_this_loop()
    log_dir.mkdir(parents=True, exist_ok=True)
    system = System(
        namespace=namespace,
        database_url=database_url_for(admin_url, database),
        amqp_url=amqp_url,
        api_url=f"http://127.0.0.1:{http_port}",
        jwt_secret=uuid.uuid4().hex,
        sink=sink,
        log_dir=log_dir,
    )
    bench = Bench(system, admin_url, database, tracker, bench_services(service_count))
    try:
        await start(system, service_env(system, http_port, {"CONTACTS_LOG_LEVEL": "WARNING", **extra_env}))
        await seed(bench)
    except BaseException:
        await stop_bench(bench)
        raise
    return bench


async def seed(bench: Bench) -> None:
    messages = []
    for s in bench.services:
        messages += [AccountUpserted(nic=nic, email=f"{nic}@example.test", zone=Zone.EU) for nic in (s.admin, s.tech_a, s.tech_b, s.billing)]
        messages.append(ServiceUpserted(service=s.name, type="hosting", admin=s.admin, tech=s.tech, billing=s.billing))
    await bench.system.publish(*messages)

    async def seeded() -> bool:
        conn = await bench.connect("requests")
        try:
            services = await conn.fetchval("SELECT count(*) FROM services")
            accounts = await conn.fetchval("SELECT count(*) FROM accounts")
        finally:
            await conn.close()
        return services == len(bench.services) and accounts == 4 * len(bench.services)

    await eventually(seeded, timeout=300, what="the seeded services and accounts to reach the requests service")


async def stop_bench(bench: Bench) -> None:
    await stop(bench.system)
    bench.system.sink.stop()
    await drop_namespace(bench.system.database_url, bench.system.amqp_url, bench.system.namespace)
    conn = await asyncpg.connect(bench.admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{bench.database}" WITH (FORCE)')
    finally:
        await conn.close()


# --- complete flows -------------------------------------------------------------------------------


class FlowError(Exception):
    pass


@dataclass
class Flow:
    started: float
    submit_to_tokens: float
    accept_to_done: float
    finished: float


class Driver:
    """Runs complete flows over the seeded services, never two at once on one service."""

    def __init__(self, bench: Bench, timeout: float) -> None:
        self.bench = bench
        self.timeout = timeout
        self.free: asyncio.Queue[BenchService] = asyncio.Queue()
        for s in bench.services:
            self.free.put_nowait(s)
        # aiohttp, not httpx: httpcore's pool walks every connection (a getpeername each) and
        # anyio probes for an async library (an import attempt) on every request, which made the
        # bench's client cost more CPU than the API serving it (bench/README.md).
        self.client = aiohttp.ClientSession(
            base_url=bench.system.api_url,
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=512),
        )
        self._auth: dict[str, dict[str, str]] = {}
        self.starved = 0  # flows that had to wait for a free service (open loop too fast for the pool)

    def auth(self, nic: str) -> dict[str, str]:
        if nic not in self._auth:
            self._auth[nic] = {"Authorization": f"Bearer {self.bench.system.jwt(nic)}"}
        return self._auth[nic]

    async def close(self) -> None:
        await self.client.close()

    async def flow(self) -> Flow:
        if self.free.empty():
            self.starved += 1
        service = await self.free.get()
        tracker = self.bench.tracker
        new, requester = service.other_tech, service.admin
        started = time.perf_counter()
        async with self.client.post(
            f"/v1/services/{quote(service.name, safe='')}/contact-changes", json={"tech": new}, headers=self.auth(requester)
        ) as response:
            if response.status != 202:
                raise FlowError(f"submit answered {response.status}: {(await response.text())[:300]}")
            request_id = (await response.json())["items"][0]["id"]
        try:
            arrivals = await tracker.wait(request_id, lambda a: len(a.tokens) >= 2, self.timeout, "the two token emails")
            tokens_at = max(arrivals.token_at)
            # The new contact accepts first, the requester last: the last accept applies the change.
            for nic in (new, requester):
                last_accept = time.perf_counter()
                async with self.client.post(
                    f"/v1/contact-changes/{request_id}/accept", json={"token": arrivals.tokens[nic]}, headers=self.auth(nic)
                ) as response:
                    if response.status != 200:
                        raise FlowError(f"accept by {nic} answered {response.status}: {(await response.text())[:300]}")
                    await response.read()
            # requester, new and previous contact
            arrivals = await tracker.wait(request_id, lambda a: len(a.done_to) >= 3, self.timeout, "the three done emails")
            done_at = max(arrivals.done_at)
        finally:
            tracker.forget(request_id)
        service.tech = new
        self.free.put_nowait(service)  # a failed flow keeps its service out: its state is unknown
        return Flow(started, tokens_at - started, done_at - last_accept, done_at)

    async def contacts_mismatches(self) -> list[str]:
        """Services whose technical contact differs from what the completed flows made it."""
        conn = await self.bench.connect("requests")
        try:
            rows = await conn.fetch("SELECT service, tech FROM services")
        finally:
            await conn.close()
        actual = {r["service"]: r["tech"] for r in rows}
        return [f"{s.name}: tech is {actual.get(s.name)}, expected {s.tech}" for s in self.bench.services if actual.get(s.name) != s.tech]


__all__ = ["SCHEMAS", "Bench", "BenchService", "Driver", "Flow", "FlowError", "ProcessMeter", "start_bench", "stop_bench"]

"""What every service does at start and stop: migrate, pool, bus, background loops, signals.

Stopping (SIGTERM or SIGINT) is graceful and bounded: the consumers are cancelled and the
messages in hand finish (commit and ack, or roll back and return to the queue); background loops
stop between two units of work (an email is never cut between its send and its record); the
outbox is flushed; the whole takes well under the 10 s an orchestrator waits before SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import structlog
import uvloop

from contacts_shared.bus import GRACE_SECONDS, ServiceBus
from contacts_shared.db import (
    create_pool,
    database_answers,
    drain_on_notify,
    migrate,
    schema_name,
)
from contacts_shared.graceful import InFlight
from contacts_shared.handling import Subscription
from contacts_shared.logs import configure_logging
from contacts_shared.observability import HealthServer, Refresher
from contacts_shared.retention import COMMON_PRUNERS, Pruner, prune_periodically
from contacts_shared.settings import CommonSettings, load_settings

log = structlog.get_logger("contacts.runtime")

SettingsT = TypeVar("SettingsT", bound=CommonSettings)

# The whole stop, every step included, fits in this: an orchestrator sends SIGKILL 10 s after
# SIGTERM, and each step's own waits (in-flight messages, units, the last outbox batch) could
# otherwise add up past it. A step cut short loses nothing: what it held is rolled back and
# redelivered, or left in the outbox for the next start.
STOP_SECONDS = 8.0

# How often the watchdog looks at the consumer, and how long it may be lost while the broker answers.
WATCH_SECONDS = 5.0
CONSUMER_LOST_SECONDS = 30.0

# Allocations (net of frees) between two collections of the youngest generation (default 700).
GC_YOUNG_THRESHOLD = 10_000


@dataclass
class Runtime:
    service: str
    pool: asyncpg.Pool
    bus: ServiceBus
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    units: InFlight = field(default_factory=InFlight)
    # Gauges of shared state, refreshed when /metrics is scraped.
    refreshers: list[Refresher] = field(default_factory=list)
    _stop_by: float | None = None  # set by begin_stop
    # Non-zero when the service stops because it cannot work (the watchdog): the process exits so.
    exit_code: int = 0

    async def ready(self) -> dict[str, bool]:
        """Readiness: the database answers; the broker connection is up and our consumer on it."""
        return {"database": await database_answers(self.pool), "broker": await self.bus.ready()}

    def begin_stop(self) -> float:
        """The moment (monotonic) by which the whole stop must be over, fixed at its first call:
        a service that stops something of its own first (requests' HTTP server) calls it then."""
        if self._stop_by is None:
            self._stop_by = time.monotonic() + STOP_SECONDS
        return self._stop_by

    def drain(
        self, channel: str, drain_once: Callable[[], Awaitable[int]], name: str, batch: int | None = None
    ) -> None:
        """Run `drain_once` whenever `channel` is notified; a stop never cuts one in half."""
        self.background(
            drain_on_notify(self.pool, channel, lambda: self.units.run(drain_once), batch=batch), name=name
        )

    def every(self, seconds: float, job: Callable[[], Awaitable[object]], name: str) -> None:
        """Run `job` periodically; a failure is logged and retried at the next tick."""

        async def loop() -> None:
            while True:
                try:
                    await self.units.run(job)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    log.warning("periodic job failed", job=name, reason=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(seconds)

        self.tasks.append(asyncio.create_task(loop(), name=name))

    def background(self, coro: Awaitable[None], name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def service_runtime(
    service: str,
    settings: CommonSettings,
    migrations: Sequence[str],
    subscriptions: Sequence[Subscription],
    *,
    dependencies: Mapping[str, Any] | None = None,
    metrics_port: int = 0,
    pruners: Sequence[Pruner] = (),
) -> AsyncIterator[Runtime]:
    """The service's runtime; with `metrics_port`, /healthz, /readyz and /metrics are served there.
    Bookkeeping older than the retention is pruned periodically: the inbox, and `pruners`."""
    schema = schema_name(settings.namespace, service)
    applied = await migrate(settings.database_url, schema, migrations)
    log.info("schema ready", schema=schema, migrations_applied=applied)
    pool = await create_pool(settings.database_url, schema, max_size=settings.database_pool_size)
    bus = ServiceBus(amqp_url=settings.amqp_url, namespace=settings.namespace, service=service, pool=pool)
    bus.handle_all(subscriptions, dependencies)
    runtime = Runtime(service=service, pool=pool, bus=bus, refreshers=[bus.refresh_metrics])
    health = HealthServer(metrics_port, runtime.ready, runtime.refreshers) if metrics_port else None
    try:
        await bus.start()
        log.info("consuming", queue=bus.queue.name, routing_keys=sorted(bus.consumer.subscriptions))
        runtime.background(watch_consumer(runtime), name="consumer-watchdog")
        runtime.background(
            prune_periodically(pool, (*COMMON_PRUNERS, *pruners), settings.retention_days, run=runtime.units.run),
            name="retention",
        )
        settle_garbage_collector()
        if health:
            await health.start()
        yield runtime
    finally:
        started = time.monotonic()
        stop_by = runtime.begin_stop()
        await _stop_step("consumers", bus.stop_consuming(), stop_by)
        for task in runtime.tasks:
            task.cancel()
        await _stop_step("background loops", asyncio.gather(*runtime.tasks, return_exceptions=True), stop_by)
        unfinished = await runtime.units.wait(min(GRACE_SECONDS, left_of(stop_by)))
        await _stop_step("broker and outbox", bus.stop(), stop_by)
        if health:
            await _stop_step("health server", health.stop(), stop_by)
        if not await _stop_step("database pool", pool.close(), stop_by):
            pool.terminate()
        log.info("stopped", seconds=round(time.monotonic() - started, 3), unfinished_units=unfinished)
        if runtime.exit_code:
            raise SystemExit(runtime.exit_code)


async def watch_consumer(runtime: Runtime) -> None:
    """Exit (code 1, after a clean stop) for the supervisor to restart the service when the
    broker answers but this process has not been consuming for CONSUMER_LOST_SECONDS: a service
    that sits idle beside a full queue is worse than one restarted. While the broker is away,
    the service only says so on /readyz and waits for the connection to come back."""
    lost_since: float | None = None
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        if not await runtime.bus.is_connected() or await runtime.bus.consuming():
            lost_since = None
            continue
        lost_since = lost_since or time.monotonic()
        lost_for = time.monotonic() - lost_since
        if lost_for < CONSUMER_LOST_SECONDS:
            log.warning("connected but not consuming", queue=runtime.bus.queue.name, seconds=round(lost_for, 1))
            continue
        log.error("not consuming: stopping for the supervisor to restart the service", queue=runtime.bus.queue.name)
        runtime.exit_code = 1
        signal.raise_signal(signal.SIGTERM)
        return


def left_of(stop_by: float) -> float:
    return max(0.1, stop_by - time.monotonic())


async def _stop_step(name: str, step: Awaitable[object], stop_by: float) -> bool:
    """Await one step of the stop within what is left of STOP_SECONDS; False if it was cut short."""
    began = time.monotonic()
    try:
        await asyncio.wait_for(step, timeout=left_of(stop_by))
    except TimeoutError:
        log.warning("stop step cut short", step=name, seconds=round(time.monotonic() - began, 3))
        return False
    except Exception as exc:  # noqa: BLE001 - stopping goes on
        log.warning("stop step failed", step=name, reason=f"{type(exc).__name__}: {exc}")
        return False
    return True


def settle_garbage_collector() -> None:
    """Once started: what was made so far (modules, models, routes) lives as long as the process,
    so the collector stops walking it, and it runs less often. Every message and HTTP call
    allocates thousands of short-lived objects; with the defaults the collector ran many times
    per flow and its full passes walked every object the imports made (bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def wait_for_stop_signal(*also: Awaitable[object]) -> None:
    """Return on SIGTERM or SIGINT (or when one of `also` ends, e.g. the HTTP server)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.ensure_future(stop.wait()), *(asyncio.ensure_future(a) for a in also)]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    waiters[0].cancel()
    if stop.is_set():
        log.info("stop signal received: finishing the work in hand")


def run_service(settings_class: type[SettingsT], program: str, serve: Callable[[SettingsT], Awaitable[None]]) -> None:
    """A service's console script: settings (one clear line and exit 2 when one is missing,
    malformed or unsafe in production), logging, then `serve` on uvloop (a faster event loop: see bench/README.md)."""
    settings = load_settings(settings_class, program)
    configure_logging(program.removeprefix("contacts-"), settings.log_format, settings.log_level)
    if settings.env == "development":
        log.warning("development mode: the checks that make a deployment safe are off (CONTACTS_ENV=development)")
    uvloop.run(serve(settings))

"""What every service does at start and stop: migrate, pool, bus, background loops, signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog

from contacts_shared.bus import Handler, ServiceBus
from contacts_shared.db import create_pool, migrate, schema_name
from contacts_shared.settings import CommonSettings

log = structlog.get_logger("contacts.runtime")


@dataclass
class Runtime:
    service: str
    pool: asyncpg.Pool
    bus: ServiceBus
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def every(self, seconds: float, job: Callable[[], Awaitable[object]], name: str) -> None:
        """Run `job` periodically; a failure is logged and retried at the next tick."""

        async def loop() -> None:
            while True:
                try:
                    await job()
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
    handlers: dict[str, Handler],
) -> AsyncIterator[Runtime]:
    schema = schema_name(settings.namespace, service)
    applied = await migrate(settings.database_url, schema, migrations)
    log.info("schema ready", schema=schema, migrations_applied=applied)
    pool = await create_pool(settings.database_url, schema)
    bus = ServiceBus(amqp_url=settings.amqp_url, namespace=settings.namespace, service=service, pool=pool)
    bus.handle_all(handlers)
    runtime = Runtime(service=service, pool=pool, bus=bus)
    try:
        await bus.start()
        log.info("consuming", queue=bus.queue.name, routing_keys=sorted(handlers))
        yield runtime
    finally:
        for task in runtime.tasks:
            task.cancel()
        for task in runtime.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await bus.stop()
        await pool.close()
        log.info("stopped")


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

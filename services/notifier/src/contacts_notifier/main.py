"""`contacts-notifier`: issues the per-confirmer tokens and sends every email."""

from __future__ import annotations

from contacts_shared.runtime import run_service, service_runtime, wait_for_stop_signal
from contacts_shared.settings import NotifierSettings

from contacts_notifier.handlers import HANDLERS
from contacts_notifier.mailer import Mailer
from contacts_notifier.store import MIGRATIONS, PRUNERS

PROGRAM = "contacts-notifier"


async def serve(settings: NotifierSettings) -> None:
    # Besides the inbox, the retention job clears old sent mails' texts.
    async with service_runtime(
        "notifier", settings, MIGRATIONS, HANDLERS, metrics_port=settings.metrics_port, pruners=PRUNERS
    ) as runtime:
        mailer = Mailer(runtime.pool, settings, announce=runtime.bus.publish_now)
        channel = await runtime.pool.fetchval("SELECT current_schema() || '_mail'")
        # At a stop, the email being sent is finished and recorded, never sent twice.
        runtime.drain(channel, mailer.send_due, name="mailer", batch=mailer.batch_size * mailer.parallel)
        await wait_for_stop_signal()


def main() -> None:
    run_service(NotifierSettings, PROGRAM, serve)


if __name__ == "__main__":
    main()

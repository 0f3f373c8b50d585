"""`contacts-billing-check`: vets contact changes against unpaid invoices and payment methods."""

from __future__ import annotations

import uvloop

from contacts_billing_check.handlers import HANDLERS
from contacts_billing_check.store import MIGRATIONS
from contacts_shared.logs import configure_logging
from contacts_shared.runtime import service_runtime, wait_for_stop_signal
from contacts_shared.settings import BillingCheckSettings, load_settings

PROGRAM = "contacts-billing-check"


async def serve(settings: BillingCheckSettings) -> None:
    async with service_runtime("billing_check", settings, MIGRATIONS, HANDLERS, metrics_port=settings.metrics_port):
        await wait_for_stop_signal()


def main() -> None:
    settings = load_settings(BillingCheckSettings, PROGRAM)
    configure_logging("billing-check", settings.log_format, settings.log_level)
    uvloop.run(serve(settings))  # a faster event loop: see bench/README.md


if __name__ == "__main__":
    main()

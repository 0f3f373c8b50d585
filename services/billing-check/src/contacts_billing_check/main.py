"""`contacts-billing-check`: vets contact changes against unpaid invoices and payment methods."""

from __future__ import annotations

from contacts_shared.runtime import run_service, service_runtime, wait_for_stop_signal
from contacts_shared.settings import BillingCheckSettings

from contacts_billing_check.handlers import HANDLERS
from contacts_billing_check.store import MIGRATIONS

PROGRAM = "contacts-billing-check"


async def serve(settings: BillingCheckSettings) -> None:
    async with service_runtime("billing_check", settings, MIGRATIONS, HANDLERS, metrics_port=settings.metrics_port):
        await wait_for_stop_signal()


def main() -> None:
    run_service(BillingCheckSettings, PROGRAM, serve)


if __name__ == "__main__":
    main()

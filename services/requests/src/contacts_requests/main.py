"""`contacts-requests`: the HTTP API and the consumers of the requests service in one process."""

from __future__ import annotations

import uvicorn
import uvloop

from contacts_requests.api import create_api
from contacts_requests.handlers import expire_overdue, message_handlers
from contacts_requests.store import MIGRATIONS
from contacts_shared.logs import configure_logging
from contacts_shared.runtime import service_runtime
from contacts_shared.settings import RequestsSettings, load_settings

PROGRAM = "contacts-requests"


async def serve(settings: RequestsSettings) -> None:
    async with service_runtime("requests", settings, MIGRATIONS, message_handlers(settings.request_ttl)) as runtime:
        runtime.every(1.0, lambda: expire_overdue(runtime.pool), name="expire-overdue")
        app = create_api(
            pool=runtime.pool,
            jwt_secret=settings.jwt_secret,
            request_ttl=settings.request_ttl,
            ready=lambda: runtime.bus.broker.running,
        )
        config = uvicorn.Config(
            app, host="0.0.0.0", port=settings.http_port, log_config=None, access_log=False, lifespan="off"
        )
        # uvicorn handles SIGTERM/SIGINT: it stops accepting, finishes requests in flight, returns.
        await uvicorn.Server(config).serve()


def main() -> None:
    settings = load_settings(RequestsSettings, PROGRAM)
    configure_logging("requests")
    uvloop.run(serve(settings))  # a faster event loop: see bench/README.md


if __name__ == "__main__":
    main()

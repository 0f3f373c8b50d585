"""`contacts-requests`: the HTTP API and the consumers of the requests service in one process."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn
from contacts_shared.auth import TokenVerifier
from contacts_shared.observability import (
    REQUESTS_BY_STATE,
    Refresher,
    RequestContextMiddleware,
)
from contacts_shared.runtime import (
    Runtime,
    left_of,
    run_service,
    service_runtime,
    wait_for_stop_signal,
)
from contacts_shared.settings import RequestsSettings

from contacts_requests import store
from contacts_requests.api import create_api
from contacts_requests.body_limit import BodyLimit
from contacts_requests.consumers import HANDLERS
from contacts_requests.domain import OPEN_STATES, ReminderSchedule
from contacts_requests.handlers import ask_vetting_again, expire_overdue, remind_due
from contacts_requests.rate_limits import RateLimits
from contacts_requests.schema import MIGRATIONS
from contacts_requests.transport import StrictTransportSecurity

PROGRAM = "contacts-requests"
# In-flight HTTP requests get this long after SIGTERM (the consumers stop at the same time).
HTTP_GRACE_SECONDS = 4
# An idle connection is kept longer than proxies and clients keep theirs (nginx and load
# balancers 60 s, httpx 5 s), so that it is always the client that closes it: a server closing
# at the moment the client reuses it makes that request fail with no answer.
KEEP_ALIVE_SECONDS = 75


class _Server(uvicorn.Server):
    # Signals are the runtime's: it stops HTTP and the consumers together, then exits cleanly
    # (uvicorn's own handling would re-raise SIGTERM after serving and skip that).
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def requests_by_state_refresher(runtime: Runtime) -> Refresher:
    async def refresh() -> None:
        async with runtime.pool.acquire() as conn:
            counts = await store.open_requests_by_state(conn)
        for state in OPEN_STATES:
            REQUESTS_BY_STATE.labels(state.value).set(counts.get(state.value, 0))

    return refresh


async def serve(settings: RequestsSettings) -> None:
    # /metrics on a port of its own (CONTACTS_METRICS_PORT), never the public one.
    reminders = ReminderSchedule(settings.remind_after, settings.remind_before_expiry, settings.reminders)
    dependencies = {"request_ttl": settings.request_ttl, "reminders": reminders}
    async with service_runtime(
        "requests", settings, MIGRATIONS, HANDLERS, dependencies=dependencies, metrics_port=settings.metrics_port
    ) as runtime:
        runtime.every(1.0, lambda: expire_overdue(runtime.pool), name="expire-overdue")
        runtime.every(1.0, lambda: remind_due(runtime.pool, reminders), name="remind")
        reask = settings.vetting_reask
        runtime.every(min(reask.total_seconds() / 4, 30.0), lambda: ask_vetting_again(runtime.pool, reask), name="ask-vetting-again")
        runtime.refreshers.append(requests_by_state_refresher(runtime))
        app = create_api(
            pool=runtime.pool,
            jwt_secret=settings.jwt_secret,
            verifier=TokenVerifier(
                settings.jwt_secret,
                jwks_url=settings.jwt_jwks_url,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                max_lifetime=settings.jwt_max_lifetime,
                roles_claim=settings.jwt_roles_claim,
            ),
            rate_limits=RateLimits(settings.resend_interval, settings.resends_per_request, settings.submissions_per_hour),
            request_ttl=settings.request_ttl,
            dev_login=settings.dev_login,
            ready=runtime.ready,
        )
        config = uvicorn.Config(
            RequestContextMiddleware(StrictTransportSecurity(BodyLimit(app))),
            host="0.0.0.0",
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            # The TLS proxy's X-Forwarded-Proto and -For, believed from its addresses only.
            proxy_headers=bool(settings.forwarded_allow_ips),
            forwarded_allow_ips=settings.forwarded_allow_ips or "",
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve())
        await wait_for_stop_signal(serving)
        # Stop accepting, finish the requests in flight; meanwhile the consumers stop too. Both
        # count in the whole stop's time (the runtime does the rest with what is left).
        stop_by = runtime.begin_stop()
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(serving, runtime.bus.stop_consuming()), timeout=left_of(stop_by))


def main() -> None:
    run_service(RequestsSettings, PROGRAM, serve)


if __name__ == "__main__":
    main()

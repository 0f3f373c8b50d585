"""Operations: /healthz, /readyz and Prometheus /metrics on every service, and JSON logs that carry
http_request_id and message_id and never a JWT or a validation code. The metrics and logs of this
run are kept in test-artifacts/<test>/ (docs/operations.md shows them)."""

from __future__ import annotations

import json
import uuid

import aio_pika
import httpx
import pytest
from contacts_shared.logs import redact_text
from seed import HOSTING, OLD_TECH, OWNER, WEBMASTER, email_of, feed_world
from support import System, eventually, free_port
from workload import Services

pytestmark = pytest.mark.e2e


@pytest.fixture
def system_settings() -> dict[str, str]:
    return {"CONTACTS_LOG_FORMAT": "json"}


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")  # Prometheus text format
    return response.text


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one sample, e.g. sample(text, "contacts_requests_by_state", state="done")."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        metric, _, label_text = series.partition("{")
        if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
            return float(value)
    return None


async def test_health_metrics_and_logs_after_a_flow(system: System, services: Services) -> None:
    # Every service serves /healthz, /readyz and /metrics on a port of its own when given one
    # (the requests service's API port has /healthz and /readyz, never /metrics).
    ports = {name: free_port() for name in ("contacts-requests", "contacts-billing-check", "contacts-notifier")}
    for name, port in ports.items():
        await services.restart(name, CONTACTS_METRICS_PORT=str(port))
    await feed_world(system)

    # One request, to the end, and one HTTP call with the caller's request id.
    request_id = await system.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    tokens = []
    for nic in (WEBMASTER, OWNER):
        mail = await system.token_mail(email_of(nic), request_id)
        tokens.append(mail.token)
        assert (await system.act(nic, request_id, "accept", mail.token)).status_code == 200
    await system.wait_state(OWNER, request_id, "done")
    for nic in (OWNER, WEBMASTER, OLD_TECH):
        await system.wait_mails(email_of(nic), "done")
    http_request_id = uuid.uuid4().hex
    async with system.api(OWNER) as client:
        response = await client.get("/v1/me/contacts", headers={"X-Request-Id": http_request_id})
    assert response.headers["x-request-id"] == http_request_id

    # A message that cannot be parsed goes to the requests service's dead-letter queue.
    connection = await aio_pika.connect(system.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(f"{system.namespace}contacts")
        await exchange.publish(aio_pika.Message(b"{not json", message_id=str(uuid.uuid4())), routing_key="account.upserted")

    # --- health ---
    endpoints = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, base in endpoints.items():
            assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}, name
            ready = await client.get(f"{base}/readyz")
            assert ready.status_code == 200, (name, ready.text)
            assert ready.json() == {"status": "ready", "checks": {"database": True, "broker": True}}, name

    # --- metrics ---
    dlq = f"{system.namespace}requests.dlq"

    async def requests_metrics() -> str | None:
        text = await scrape(f"{endpoints['contacts-requests']}/metrics")
        settled = sample(text, "contacts_dead_letter_queue_depth", queue=dlq) == 1 and sample(text, "contacts_outbox_backlog") == 0
        return text if settled else None

    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{system.api_url}/metrics")).status_code == 404, "metrics on the public port"
        assert (await client.get(f"{system.api_url}/readyz")).status_code == 200
    requests = await eventually(requests_metrics, timeout=30, what="the dead letter and an empty outbox in the metrics")
    # Open states only (a scrape reads what is open, not the history); how requests ended is
    # the flow histogram's count.
    assert sample(requests, "contacts_requests_by_state", state="validating") == 0
    assert sample(requests, "contacts_requests_by_state", state="done") is None
    assert sample(requests, "contacts_request_flow_seconds_count", state="done") == 1
    assert 0 < sample(requests, "contacts_request_flow_seconds_sum", state="done") < 60
    assert sample(requests, "contacts_request_flow_seconds_bucket", state="done", le="+Inf") == 1
    assert sample(requests, "contacts_messages_handled_total", routing_key="contact_change.vetted", outcome="handled") == 2
    assert sample(requests, "contacts_messages_handled_total", routing_key="account.upserted", outcome="dead_lettered") == 1
    assert sample(requests, "contacts_http_requests_total", method="POST", status="202") == 1

    notifier = await scrape(f"{endpoints['contacts-notifier']}/metrics")
    assert sample(notifier, "contacts_emails_sent_total", kind="token") == 2
    # done: owner, webmaster, old tech; and the heads-up the old tech got when the codes went out
    assert sample(notifier, "contacts_emails_sent_total", kind="outcome") == 4
    assert "# TYPE contacts_emails_failed_total counter" in notifier
    assert sample(notifier, "contacts_dead_letter_queue_depth", queue=f"{system.namespace}notifier.dlq") == 0
    assert sample(notifier, "contacts_outbox_backlog") == 0

    billing = await scrape(f"{endpoints['contacts-billing-check']}/metrics")
    assert sample(billing, "contacts_messages_handled_total", routing_key="contact_change.requested", outcome="handled") == 2
    assert sample(billing, "contacts_message_handling_seconds_count", routing_key="contact_change.requested") == 2

    for name, text in (("requests", requests), ("notifier", notifier), ("billing-check", billing)):
        (system.log_dir / f"metrics-{name}.txt").write_text(text)

    # --- logs ---
    secrets = [system.jwt(OWNER), system.jwt(WEBMASTER), *tokens]
    for path in sorted(system.log_dir.glob("*.log")):
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, f"a secret is in {path.name}"
        assert redact_text(text) == text, f"{path.name} holds something shaped like a secret"
        for line in text.splitlines():
            entry = json.loads(line)  # every line, the libraries' included, is one JSON object
            assert {"event", "level", "timestamp", "service"} <= set(entry), line
            if entry["event"] == "message handled":
                assert uuid.UUID(entry["message_id"]) and entry["routing_key"], line
    logs = [json.loads(line) for line in system.logs().splitlines() if line]
    assert any(e.get("http_request_id") == http_request_id and e["event"] == "http request" for e in logs)
    # What an HTTP call does is logged under its id too (next to the contact change's request_id).
    submitted = next(e for e in logs if e["event"] == "request submitted")
    assert submitted["request_id"] == request_id and submitted["http_request_id"]
    assert any(e["event"] == "email sent" and e.get("kind") == "token" for e in logs)
    assert any(e["event"] == "message dead-lettered" and e["service"] == "requests" for e in logs)

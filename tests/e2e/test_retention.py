"""Growth: the three services, started with CONTACTS_RETENTION_DAYS, prune their bookkeeping by
themselves (first pass right after start), and keep requests and their history."""

from __future__ import annotations

import pytest
from seed import HOSTING, OWNER, WEBMASTER, email_of
from support import SCHEMAS, System, eventually, start, stop

pytestmark = pytest.mark.e2e

RETENTION_DAYS = 7  # not the default (30): rows 8 days old go only if the setting is read


@pytest.fixture
def system_settings() -> dict[str, str]:
    return {"CONTACTS_RETENTION_DAYS": str(RETENTION_DAYS)}


OLD = f"now() - interval '{RETENTION_DAYS + 1} days'"
RECENT = f"now() - interval '{RETENTION_DAYS - 1} days'"
MAIL_TEXTS = "num_nonnulls(subject, body, token_context, last_error) > 0"


async def count(world: System, schema: str, query: str) -> int:
    return (await world.sql(schema, query))[0][0]


async def test_services_started_with_a_retention_prune_old_bookkeeping_and_keep_requests(world: System) -> None:
    # A change to the end: every service handled messages, the notifier sent codes and outcomes.
    request_id = await world.submit_one(OWNER, HOSTING, {"tech": WEBMASTER})
    for nic in (WEBMASTER, OWNER):
        mail = await world.token_mail(email_of(nic), request_id)
        assert (await world.act(nic, request_id, "accept", mail.token)).status_code == 200
    await world.wait_state(OWNER, request_id, "done")
    await world.wait_mails(email_of(OWNER), "done")
    await eventually(
        lambda: count(world, "notifier", "SELECT count(*) = 0 FROM mails WHERE state = 'pending'"),
        what="every email to be sent",
    )
    view = await world.request(OWNER, request_id)
    requests_rows = {
        table: await world.sql("requests", f"SELECT * FROM {table} ORDER BY 1, 2")
        for table in ("contact_changes", "confirmers", "history", "accounts", "services")
    }
    mails = await count(world, "notifier", "SELECT count(*) FROM mails")
    assert mails >= 5 and await count(world, "notifier", f"SELECT count(*) FROM mails WHERE {MAIL_TEXTS}") == mails

    # Stopped, everything made so far is backdated past the retention, one row per inbox is kept
    # within it; then the services start again.
    await stop(world)
    recent = {}
    for schema in SCHEMAS:
        assert await count(world, schema, "SELECT count(*) FROM inbox") > 0, schema
        await world.sql(schema, f"UPDATE inbox SET received_at = {OLD}")
        recent[schema] = (
            await world.sql(
                schema,
                f"INSERT INTO inbox (message_id, routing_key, received_at) VALUES (gen_random_uuid(), 'x', {RECENT})"
                " RETURNING message_id",
            )
        )[0][0]
    await world.sql("notifier", f"UPDATE mails SET created_at = {OLD}, sent_at = {OLD}")
    await start(world, world.env)

    async def pruned() -> bool:
        for schema in SCHEMAS:
            if await count(world, schema, f"SELECT count(*) FROM inbox WHERE received_at < now() - interval '{RETENTION_DAYS} days'"):
                return False
        return not await count(world, "notifier", f"SELECT count(*) FROM mails WHERE {MAIL_TEXTS}")

    await eventually(pruned, timeout=20, what="the services to prune what is older than the retention")

    for schema in SCHEMAS:
        assert await count(world, schema, f"SELECT count(*) FROM inbox WHERE message_id = '{recent[schema]}'") == 1
    # The mail log keeps every row (its dedupe keys), without the texts.
    assert await count(world, "notifier", "SELECT count(*) FROM mails") == mails
    # The request, its confirmers, its history and the replicas are as they were.
    for table, rows in requests_rows.items():
        assert await world.sql("requests", f"SELECT * FROM {table} ORDER BY 1, 2") == rows, table
    assert await world.request(OWNER, request_id) == view
    assert "bookkeeping pruned" in world.logs()

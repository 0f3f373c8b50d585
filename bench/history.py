"""Stored history for the scale runs: finished requests, their confirmers and history lines,
written with COPY straight into the requests schema (as years of use would have left them),
spread over many services and accounts; and the table counters that show whether a query
scans something that grows with that history.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

# Final states of the past, roughly as often as they happen.
FINAL_STATES = ["done"] * 80 + ["rejected"] * 6 + ["declined"] * 5 + ["expired"] * 5 + ["cancelled"] * 3 + ["failed"] * 1
CHUNK = 20_000


async def grow_history(conn: asyncpg.Connection, target: int, active_services: list[str], seed: int = 7) -> int:
    """Add finished requests until `contact_changes` holds `target` rows; returns how many were added.

    About one in ten lands on the services the benchmark drives, the rest on a pool of past
    services (about five requests each) among a pool of past accounts.
    """
    have = await conn.fetchval("SELECT count(*) FROM contact_changes")
    missing = max(0, target - have)
    rng = random.Random(seed + have)
    past_services = [f"past{i}.hist.example" for i in range(max(10, target // 5))]
    past_nics = [f"hi{i}-hist" for i in range(max(10, target // 2))]
    now = datetime.now(UTC)
    added = 0
    while added < missing:
        size = min(CHUNK, missing - added)
        changes, confirmers, history = [], [], []
        for _ in range(size):
            request_id = uuid.uuid4()
            service = rng.choice(active_services) if active_services and rng.random() < 0.1 else rng.choice(past_services)
            ctype = rng.choice(("admin", "tech", "billing"))
            requester, from_nic, to_nic = rng.sample(past_nics, 3)
            state = rng.choice(FINAL_STATES)
            created = now - timedelta(seconds=rng.uniform(3600, 2 * 365 * 86400))
            updated = created + timedelta(seconds=rng.uniform(1, 3 * 86400))
            reason = None if state in ("done", "cancelled") else f"historical {state}"
            changes.append((request_id, service, ctype, from_nic, to_nic, requester, state, reason, created, updated, created + timedelta(days=14), created))
            answer = "accepted" if state in ("done", "failed") else ("declined" if state == "declined" else "pending")
            for nic in (requester, to_nic):
                confirmers.append((request_id, nic, answer, None, None, None, 0, updated if answer != "pending" else None))
            steps = [("checking", requester, "submitted")]
            if state != "rejected":
                steps.append(("validating", "system", None))
            if state in ("done", "failed"):
                steps += [("validating", to_nic, f"accepted by {to_nic}"), ("applying", requester, None)]
            steps.append((state, "system", reason))
            history += [(request_id, created + timedelta(seconds=i), s, actor, why) for i, (s, actor, why) in enumerate(steps)]
        await conn.copy_records_to_table(
            "contact_changes",
            records=changes,
            columns=["id", "service", "type", "from_nic", "to_nic", "requester", "state", "reason", "created_at", "updated_at", "expires_at", "tokens_reset_at"],
        )
        await conn.copy_records_to_table(
            "confirmers",
            records=confirmers,
            columns=["request_id", "nic", "state", "token_hash", "token_expires_at", "token_issued_at", "failures", "answered_at"],
        )
        await conn.copy_records_to_table("history", records=history, columns=["request_id", "at", "state", "actor", "reason"])
        added += size
    await conn.execute("ANALYZE contact_changes; ANALYZE confirmers; ANALYZE history")
    return added


async def table_scans(conn: asyncpg.Connection, namespace: str) -> dict[str, dict[str, int]]:
    """Sequential and index scans so far on every table of the namespace's schemas."""
    rows = await conn.fetch(
        "SELECT schemaname, relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan, n_live_tup"
        " FROM pg_stat_user_tables WHERE schemaname LIKE $1",
        namespace.replace("_", r"\_") + "%",
    )
    return {
        f"{r['schemaname'][len(namespace):]}.{r['relname']}": {
            "seq_scan": r["seq_scan"],
            "seq_tup_read": r["seq_tup_read"],
            "idx_scan": r["idx_scan"],
            "rows": r["n_live_tup"],
        }
        for r in rows
    }


def scans_between(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], flows: int) -> dict[str, dict[str, float]]:
    """Per flow, the scans each table saw between two readings (tables that saw any)."""
    out = {}
    for table, now in sorted(after.items()):
        then = before.get(table, {"seq_scan": 0, "seq_tup_read": 0, "idx_scan": 0})
        seq, read, idx = (now[k] - then[k] for k in ("seq_scan", "seq_tup_read", "idx_scan"))
        if seq or idx:
            out[table] = {
                "rows": now["rows"],
                "seq_scans_per_flow": round(seq / max(1, flows), 2),
                "seq_rows_read_per_flow": round(read / max(1, flows), 1),
                "index_scans_per_flow": round(idx / max(1, flows), 2),
            }
    return out


async def committed_transactions(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")


async def message_and_mail_counts(conn: asyncpg.Connection, namespace: str, schemas: tuple[str, ...]) -> dict[str, int]:
    """Messages consumed, published and emails sent, so far. Consumed: the inbox rows, and the
    billing check's questions, which it answers without claiming them (one verdict each in the
    requests service's inbox); a message a service is not bound to never reaches it. Published:
    the outbox ids handed out, and the messages published without an outbox, each claimed once
    in the requests service's inbox: the notifier's `token_issued` (one per code) and the billing
    check's verdicts (`contact_change.vetted`, answers published at once: `ServiceBus.reply`)."""
    consumed = published = 0
    for schema in schemas:
        quoted = f'"{namespace}{schema}"'
        consumed += await conn.fetchval(f"SELECT count(*) FROM {quoted}.inbox")
        published += await conn.fetchval(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {quoted}.outbox_id_seq")
    published += await conn.fetchval(
        f"SELECT count(*) FROM \"{namespace}requests\".inbox WHERE routing_key IN ('contact_change.token_issued', 'contact_change.vetted')"
    )
    consumed += await conn.fetchval(f"SELECT count(*) FROM \"{namespace}requests\".inbox WHERE routing_key = 'contact_change.vetted'")
    sent = await conn.fetchval(f"SELECT count(*) FROM \"{namespace}notifier\".mails WHERE state = 'sent'")
    return {"consumed": consumed, "published": published, "emails": sent}


STAGES = {
    "submit -> vetted": "vetted - submitted",
    "vetted -> token mails queued": "token_queued - vetted",
    "token mails queued -> sending": "token_sending - token_queued",
    "last accept -> done": "done - accepted",
    "done -> done mails queued": "done_queued - done",
    "done mails queued -> sending": "done_sending - done_queued",
}


async def stage_breakdown(conn: asyncpg.Connection, namespace: str, since: datetime) -> dict[str, dict[str, float]]:
    """Where a flow's time goes between the services, from the timestamps they store
    (each is its transaction's start): p50 and p95 in ms over the requests done since `since`."""
    requests, notifier = f'"{namespace}requests"', f'"{namespace}notifier"'
    columns = ", ".join(
        f"round(1000 * percentile_cont({q}) WITHIN GROUP (ORDER BY extract(epoch FROM {expr}))) AS \"{name}|{q}\""
        for name, expr in STAGES.items()
        for q in (0.5, 0.95)
    )
    row = await conn.fetchrow(
        f"""
        WITH flows AS (
            SELECT r.id, r.created_at AS submitted,
                   (SELECT min(at) FROM {requests}.history h WHERE h.request_id = r.id AND h.state = 'validating') AS vetted,
                   (SELECT max(answered_at) FROM {requests}.confirmers c WHERE c.request_id = r.id) AS accepted,
                   (SELECT min(at) FROM {requests}.history h WHERE h.request_id = r.id AND h.state = 'done') AS done,
                   (SELECT max(created_at) FROM {notifier}.mails m WHERE m.request_id = r.id AND m.kind = 'token') AS token_queued,
                   (SELECT max(sent_at) FROM {notifier}.mails m WHERE m.request_id = r.id AND m.kind = 'token') AS token_sending,
                   (SELECT max(created_at) FROM {notifier}.mails m WHERE m.request_id = r.id AND m.kind = 'outcome') AS done_queued,
                   (SELECT max(sent_at) FROM {notifier}.mails m WHERE m.request_id = r.id AND m.kind = 'outcome') AS done_sending
            FROM {requests}.contact_changes r
            WHERE r.created_at >= $1 AND r.state = 'done'
        )
        SELECT count(*) AS flows, {columns} FROM flows
        """,
        since,
    )
    out: dict[str, dict[str, float]] = {name: {} for name in STAGES}
    for key, value in row.items():
        if "|" in key:
            name, q = key.split("|")
            out[name]["p50" if q == "0.5" else "p95"] = float(value or 0)
    return out

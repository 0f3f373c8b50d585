"""The audit of a scenario: what the flows left behind (states, contacts, emails, published events,
queues) compared with what each flow kind promises, and what the users met on the way."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import itertools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aio_pika
from faults.flows import (
    EXPECTED_MAILS,
    EXPECTED_STATE,
    FINAL,
    REFUSED,
    UNANSWERED,
    Flow,
    email_of,
    ends_done,
)
from support import System, eventually

# One row per scenario, printed by the terminal summary of tests/faults/conftest.py.
SUMMARY_COLUMNS = (
    "fault",
    "flows",
    "completed correctly",
    "lost",
    "stuck (not final 2 min after the fault)",
    "duplicated effects",
    "emails missing",
    "emails doubled",
    "SMTP resent (same Message-ID)",
    "a change applied again after / longest pause (s)",
    "in the fault's window: 5xx or no answer / fresh codes refused",
    "outside it (failures)",
    "requests per state when the fault struck",
)
RESULTS: list[tuple[object, ...]] = []
# A request not in a final state this long after its fault ended counts as stuck.
STUCK_AFTER_SECONDS = 120.0
MESSAGE_ID = re.compile(r"<mail-(\d+)\.([0-9a-f-]{36})@contacts>")
OUTCOME_SUBJECT = re.compile(r"Contact change (\w+) for ")


# --- watching what the system publishes -------------------------------------------------------


class EventTap:
    """A durable queue of our own bound to the exchange: it keeps every published event of the
    given routing keys across broker restarts, to be counted at the end."""

    def __init__(self, system: System, routing_keys: tuple[str, ...]) -> None:
        self.system = system
        self.routing_keys = routing_keys
        self.queue_name = f"{system.namespace}tap"

    async def bind(self) -> None:
        connection = await aio_pika.connect(self.system.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.queue_name, durable=True, arguments={"x-queue-type": "quorum"})
            for key in self.routing_keys:
                await queue.bind(f"{self.system.namespace}contacts", routing_key=key)

    async def drain(self) -> list[tuple[str, str, dict, datetime]]:
        """(routing key, message id, data, when it occurred) of every event kept so far."""
        found = []
        connection = await aio_pika.connect(self.system.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.queue_name, passive=True)
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                envelope = json.loads(message.body)
                found.append(
                    (
                        message.routing_key or "",
                        envelope["message_id"],
                        envelope["data"],
                        datetime.fromisoformat(envelope["occurred_at"]),
                    )
                )
            await queue.delete(if_unused=False, if_empty=False)
        return found


# --- the audit ----------------------------------------------------------------------------------


@dataclass
class Audit:
    fault: str
    flows: int
    correct: int = 0
    lost: int = 0
    stuck: int = 0
    duplicated_effects: int = 0
    mails_missing: int = 0
    mails_doubled: int = 0
    smtp_resent: int = 0
    recovery: tuple[float, float] | None = None  # see `recovery`
    in_window: Counter[str] = field(default_factory=Counter)
    outside: Counter[str] = field(default_factory=Counter)
    states_hit: str = "-"
    problems: list[str] = field(default_factory=list)

    def row(self) -> tuple[object, ...]:
        return (
            self.fault,
            self.flows,
            self.correct,
            self.lost,
            self.stuck,
            self.duplicated_effects,
            self.mails_missing,
            self.mails_doubled,
            self.smtp_resent,
            "-" if self.recovery is None else "{:.1f} / {:.1f}".format(*self.recovery),
            f"{self.in_window[UNANSWERED]} / {self.in_window[REFUSED]}",
            f"{self.outside[UNANSWERED]} / {self.outside[REFUSED]}",
            self.states_hit,
        )

    def users_met(self, windows: list[FaultWindow], mishaps: list[tuple[float, float, str, str]]) -> None:
        """Sort what the users met into inside a fault's window (the call began or failed in
        it) and outside (each a failure)."""
        for began, failed, kind, what in mishaps:
            if any(w.start <= failed <= w.end or w.start <= began <= w.end for w in windows):
                self.in_window[kind] += 1
            else:
                self.outside[kind] += 1
                self.problems.append(f"outside the fault's window, {kind}: {what}")
        self.states_hit = "; ".join(_states(w.states) for w in windows) or "-"


def _states(states: Counter[str]) -> str:
    """`unsubmitted 59, validating 117, ended 24`: the open states one by one, the final ones together."""
    open_ = {state: n for state, n in states.items() if state not in FINAL}
    ended = sum(n for state, n in states.items() if state in FINAL)
    return ", ".join(f"{state} {n}" for state, n in [*sorted(open_.items()), ("ended", ended)] if n)


@dataclass
class FaultWindow:
    """From the moment a fault strikes until every service says it is ready again: what users
    meet inside it is reported; outside it, it is a failure."""

    start: float
    states: Counter[str]  # requests per state when the fault struck; "unsubmitted" flows too
    end: float = math.inf
    struck_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # as the services' clocks say


def recovery(completions: list[datetime], windows: list[FaultWindow]) -> tuple[float, float] | None:
    """Seconds from the first fault users could notice striking until a change is next applied
    (a contact_change.completed event occurs), and the longest pause between two changes
    applied from then on: how long the system stood still."""
    noticed = [w for w in windows if w.end > w.start]
    if not noticed:
        return None
    moments = [noticed[0].struck_at, *sorted(when for when in completions if when >= noticed[0].struck_at)]
    if len(moments) == 1:
        return None
    pauses = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(moments)]
    return pauses[0], max(pauses)


def mail_counts(
    system: System,
) -> tuple[Counter[tuple[str, str, str]], Counter[tuple[str, str, str]]]:
    """Per (request id, recipient, kind): distinct Message-IDs, and SMTP deliveries."""
    distinct: dict[tuple[str, str, str], set[str]] = {}
    raw: Counter[tuple[str, str, str]] = Counter()
    for m in system.sink.store.messages():
        headers = email.message_from_bytes(m.raw, policy=email.policy.default)
        match = MESSAGE_ID.search(str(headers.get("Message-ID", "")))
        assert match, f"mail without our Message-ID: {m.subject}"
        outcome = OUTCOME_SUBJECT.match(m.subject)
        kind = "token" if m.subject.lower().startswith("please confirm") else outcome and outcome.group(1)
        kind = {"refused": "rejected"}.get(kind, kind) if kind else m.subject
        kind = "heads-up" if m.subject.lower().startswith("heads-up") else kind
        for rcpt in m.rcpt_tos:
            key = (match.group(2), rcpt.lower(), kind)
            distinct.setdefault(key, set()).add(match.group(0))
            raw[key] += 1
    return Counter({k: len(v) for k, v in distinct.items()}), raw


async def audit(
    system: System,
    flows: list[Flow],
    tap: EventTap,
    fault: str,
    *,
    fault_ended: float,
    windows: list[FaultWindow],
    mishaps: list[tuple[float, float, str, str]],
    settle_timeout: float = 240,
) -> Audit:
    """Wait for every flow to end (at most STUCK_AFTER_SECONDS after the fault ended: what is
    not final then is stuck), then compare everything with what was promised."""
    result = Audit(fault, len(flows))
    result.users_met(windows, mishaps)
    by_request = {f.request_id: f for f in flows if f.request_id}

    async def all_ended() -> bool:
        rows = await system.sql("requests", "SELECT state FROM contact_changes")
        return len(rows) >= len(by_request) and all(r["state"] in FINAL for r in rows)

    with contextlib.suppress(AssertionError):
        stuck_at = max(1.0, fault_ended + STUCK_AFTER_SECONDS - time.monotonic())
        await eventually(all_ended, timeout=stuck_at, what="every request to end", interval=0.5)

    expected_mails = _expected_mails(flows)

    async def mails_settled() -> bool:
        distinct, _ = mail_counts(system)
        return all(distinct.get(key, 0) >= 1 for key in expected_mails)

    with contextlib.suppress(AssertionError):
        await eventually(
            mails_settled,
            timeout=settle_timeout,
            what="every expected email",
            interval=1,
        )

    requests = {str(r["id"]): r for r in await system.sql("requests", "SELECT id, service, state FROM contact_changes")}
    per_service = Counter(r["service"] for r in requests.values())
    services = {r["service"]: r for r in await system.sql("requests", "SELECT service, tech FROM services")}
    # A state entered twice is a doubled effect (a note within a state, such as "the billing check
    # was asked again", is no transition; 'validating' lines are one per answer).
    history = await system.sql(
        "requests",
        "SELECT request_id FROM (SELECT request_id, state, lag(state) OVER (PARTITION BY request_id ORDER BY id) AS before"
        " FROM history) h WHERE state = ANY($1::text[]) AND before IS DISTINCT FROM state"
        " GROUP BY request_id, state HAVING count(*) > 1",
        sorted(FINAL | {"applying"}),
    )
    doubled_history = {str(r["request_id"]) for r in history}
    events = await tap.drain()
    completed_ids: dict[str, set[str]] = {}
    for routing_key, message_id, data, _ in events:
        if routing_key == "contact_change.completed":
            completed_ids.setdefault(data["request_id"], set()).add(message_id)
    result.recovery = recovery([when for key, _, _, when in events if key == "contact_change.completed"], windows)
    distinct, raw = mail_counts(system)
    result.smtp_resent = sum(raw.values()) - sum(distinct.values())

    for flow in flows:
        state = requests.get(flow.request_id or "", {}).get("state")
        expected_tech = flow.nic("new") if ends_done(flow) else flow.nic("old")
        problems = []
        if flow.error:
            problems.append(f"driver: {flow.error}")
        if state is None:
            result.lost += 1
            problems.append("no request")
        elif state not in FINAL:
            result.stuck += 1
            problems.append(f"stuck in {state}")
        elif state != EXPECTED_STATE.get(flow.kind, flow.kind):
            problems.append(f"state {state}, expected {EXPECTED_STATE.get(flow.kind, flow.kind)}")
        if services[flow.service]["tech"] != expected_tech:
            problems.append(f"tech is {services[flow.service]['tech']}, expected {expected_tech}")
        duplicates = per_service[flow.service] - 1 + (flow.request_id in doubled_history)
        published = len(completed_ids.get(flow.request_id or "", ()))
        duplicates += max(0, published - 1)
        if ends_done(flow) != (published >= 1):
            problems.append(f"contact_change.completed published {published} times")
        if duplicates:
            result.duplicated_effects += duplicates
            problems.append(f"{duplicates} duplicated effect(s)")
        for role, kinds in EXPECTED_MAILS[flow.kind].items():
            for kind, wanted in Counter(kinds).items():
                got = distinct.get((flow.request_id or "", email_of(flow.nic(role)), kind), 0)
                if got < wanted:
                    result.mails_missing += wanted - got
                    problems.append(f"{got} {kind} email(s) to {role}, expected {wanted}")
                elif got > wanted:
                    result.mails_doubled += got - wanted
                    problems.append(f"{got} {kind} emails to {role}, expected {wanted}")
        extra = sum(n for (rid, _, _), n in distinct.items() if rid == flow.request_id) - sum(
            len(k) for k in EXPECTED_MAILS[flow.kind].values()
        )
        if extra > 0 and not any("emails to" in p for p in problems):
            result.mails_doubled += extra
            problems.append(f"{extra} unexpected email(s)")
        if problems:
            result.problems.append(f"flow {flow.index} ({flow.kind}, {flow.request_id}): {'; '.join(problems)}")
        else:
            result.correct += 1
    RESULTS.append(result.row())
    return result


def _expected_mails(flows: list[Flow]) -> set[tuple[str, str, str]]:
    return {
        (f.request_id, email_of(f.nic(role)), kind)
        for f in flows
        if f.request_id
        for role, kinds in EXPECTED_MAILS[f.kind].items()
        for kind in kinds
    }


async def queues_drained(system: System, list_queues: Callable[[str], dict[str, tuple[int, int]]]) -> None:
    """Every service queue empty with nothing unacknowledged, every dead-letter queue empty."""

    async def drained() -> dict[str, tuple[int, int]] | None:
        queues = await asyncio.to_thread(list_queues, system.namespace)
        busy = {name: counts for name, counts in queues.items() if counts != (0, 0)}
        return None if busy else queues

    try:
        await eventually(drained, timeout=60, what="the service queues to drain", interval=0.5)
    except AssertionError:
        queues = await asyncio.to_thread(list_queues, system.namespace)
        raise AssertionError(f"queues not drained: {queues}") from None

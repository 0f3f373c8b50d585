"""Many concurrent contact-change flows driven like real users drive them (HTTP + email), and an
audit of what they left behind: states, contacts, emails, published events, queues.

Each flow has its own service and its own people, so that every effect can be attributed to
exactly one flow: a mail by its recipient and Message-ID, an event by its request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aio_pika
import httpx
from contacts_shared.contracts import (
    AccountUpserted,
    InvoiceIssued,
    PaymentMethodUpserted,
    ServiceUpserted,
    Zone,
)
from contacts_shared.mailsink import MailSink
from support import System, eventually, spawn, wait_ready

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
)
RESULTS: list[tuple[object, ...]] = []
# A request not in a final state this long after its fault ended counts as stuck.
STUCK_AFTER_SECONDS = 120.0

FINAL = {"done", "declined", "rejected", "failed", "cancelled", "expired"}
MESSAGE_ID = re.compile(r"<mail-(\d+)\.([0-9a-f-]{36})@contacts>")
OUTCOME_SUBJECT = re.compile(r"Contact change (\w+) for ")
TOKEN_LINK = re.compile(r"/requests/([0-9a-f-]{36})\?token=([A-Za-z0-9_\-%]+)")

# Token and outcome emails each flow kind must produce: {role: kinds of mail}.
EXPECTED_MAILS = {
    "done": {"owner": ("token", "done"), "new": ("token", "done"), "old": ("done",)},
    "declined": {"owner": ("token", "declined"), "new": ("token", "declined")},
    "rejected": {"owner": ("rejected",)},
    # The new contact's mail server refuses them for good: the owner cancels once the request's
    # history says so, and only the owner is mailed.
    "unreachable": {"owner": ("token", "cancelled")},
    # The owner asks for new codes before anyone answers: two token emails each, then done.
    "resent": {"owner": ("token", "token", "done"), "new": ("token", "token", "done"), "old": ("done",)},
}
# The final state each flow kind must reach, when not the kind itself.
EXPECTED_STATE = {"unreachable": "cancelled", "resent": "done"}


def ends_done(flow: Flow) -> bool:
    return EXPECTED_STATE.get(flow.kind, flow.kind) == "done"


def email_of(nic: str) -> str:
    return f"{nic}@example.test"


@dataclass
class Flow:
    """One user story: the owner of a service names a new technical contact."""

    index: int
    kind: str  # done | declined | rejected (the new contact has an unpaid invoice) | unreachable | resent
    tag: str  # makes NICs unique per scenario (each scenario has its own namespace anyway)
    request_id: str | None = None
    tokens_used: list[str] = field(default_factory=list)
    error: str | None = None

    def nic(self, role: str) -> str:
        prefix = {"owner": "ow", "new": "nw", "old": "ot", "billing": "bl"}[role]
        return f"{prefix}{self.index:05d}-{self.tag}"

    @property
    def service(self) -> str:
        return f"site{self.index:05d}.{self.tag}.web-hosting"


MIXED = ("done",) * 14 + ("declined",) * 3 + ("rejected",) * 3  # about 70 %, 15 %, 15 %


def make_flows(count: int, rng: random.Random, tag: str = "ovh", kinds: tuple[str, ...] = MIXED) -> list[Flow]:
    return [Flow(i, rng.choice(kinds), tag) for i in range(count)]


async def feed(system: System, flows: list[Flow]) -> None:
    """Publish the people, services and unpaid invoices, and wait until the services know them."""
    messages = []
    for flow in flows:
        for role in ("owner", "new", "old", "billing"):
            messages.append(AccountUpserted(nic=flow.nic(role), email=email_of(flow.nic(role)), zone=Zone.EU))
        messages.append(
            ServiceUpserted(
                service=flow.service,
                type="hosting",
                admin=flow.nic("owner"),
                tech=flow.nic("old"),
                billing=flow.nic("billing"),
            )
        )
        if flow.kind == "rejected":
            messages.append(
                InvoiceIssued(
                    invoice_id=f"inv-{flow.index}",
                    nic=flow.nic("new"),
                    amount="9.99",
                    currency="EUR",
                    due_at="2026-01-01T00:00:00Z",
                )
            )
    messages.append(
        PaymentMethodUpserted(
            payment_method_id="pm-any",
            nic=flows[0].nic("billing"),
            kind="card",
            valid_until=datetime.now(UTC) + timedelta(days=9),
        )
    )
    await system.publish(*messages)
    services = len(flows)
    invoices = sum(f.kind == "rejected" for f in flows)

    async def known() -> bool:
        (s,) = await system.sql("requests", "SELECT count(*) AS n FROM services")
        (a,) = await system.sql("requests", "SELECT count(*) AS n FROM accounts")
        (i,) = await system.sql("billing_check", "SELECT count(*) AS n FROM invoices")
        return s["n"] == services and a["n"] == 4 * services and i["n"] == invoices

    await eventually(known, timeout=120, what="the world to reach the services", interval=0.2)


# --- driving a flow like a user ---------------------------------------------------------------


class Users:
    """HTTP calls as the users make them: retried while the service is away (connection refused,
    5xx), spread over the API replicas."""

    def __init__(self, system: System, rng: random.Random, *, answer_together: bool = False) -> None:
        self.system = system
        self.rng = rng
        self.answer_together = answer_together
        self.urls = [system.api_url, *system.replica_api_urls]
        self.client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64))
        self.server_errors = 0

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, method: str, path: str, nic: str, *, deadline: float, **kwargs: object) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.system.jwt(nic)}",
            **kwargs.pop("headers", {}),
        }  # type: ignore[dict-item]
        pause = 0.1
        while True:
            url = self.rng.choice(self.urls) + path
            try:
                response = await self.client.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
                if response.status_code < 500:
                    return response
                self.server_errors += 1
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path} as {nic} kept failing: {last}")
            await asyncio.sleep(pause)  # a user (or a client library) backs off and tries again
            pause = min(pause * 2, 2.0)


async def tokens_mailed(system: System, request_id: str, to: str) -> list[str]:
    """The tokens of the token emails sent to `to` for the request, oldest first."""
    found = []
    for m in system.sink.store.messages(to):
        match = TOKEN_LINK.search(m.text)
        if match and match.group(1) == request_id:
            found.append(match.group(2))
    return found


async def answer(
    users: Users,
    flow: Flow,
    role: str,
    action: str,
    deadline: float,
    together: asyncio.Barrier | None = None,
) -> None:
    """Answer with the newest token the person received; a token whose hash has not reached the
    requests service yet (or the token a crash made void) is retried with the newest one."""
    nic = flow.nic(role)
    assert flow.request_id
    for _attempt in range(4):
        tokens = await eventually(
            lambda: tokens_mailed(users.system, flow.request_id or "", email_of(nic)),
            timeout=max(1.0, deadline - time.monotonic()),
            what=f"token email to {nic}",
            interval=0.3,  # hundreds of flows poll at once: don't starve the services of CPU
        )
        token = tokens[-1]
        flow.tokens_used.append(token)
        if together is not None and _attempt == 0:
            # Both confirmers hold their token: now they answer at once.
            await together.wait()
        response = await users.call(
            "POST",
            f"/v1/contact-changes/{flow.request_id}/{action}",
            nic,
            json={"token": token},
            deadline=deadline,
        )
        if response.status_code in (
            200,
            409,
        ):  # 409: already ended (e.g. our retry after a lost answer)
            return
        if response.status_code != 422:
            raise AssertionError(f"{action} as {role}: {response.status_code} {response.text}")
        await asyncio.sleep(2)  # the token's hash may still be on its way; a user would try again
    raise AssertionError(f"{action} as {role} was refused 4 times")


async def run_flow(users: Users, flow: Flow, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        response = await users.call(
            "POST",
            f"/v1/services/{flow.service}/contact-changes",
            flow.nic("owner"),
            json={"tech": flow.nic("new")},
            headers={"Idempotency-Key": f"flow-{flow.index}"},
            deadline=deadline,
        )
        assert response.status_code == 202, f"submit: {response.status_code} {response.text}"
        (item,) = response.json()["items"]
        flow.request_id = item["id"]
        if flow.kind == "rejected":
            return
        if flow.kind == "unreachable":
            await give_up_on_the_unreachable(users, flow, deadline)
            return
        if flow.kind == "resent":
            await resend_before_answering(users, flow, deadline)
        actions = {
            "owner": "accept",
            "new": "accept" if ends_done(flow) else "decline",
        }
        if users.answer_together:
            # Both confirmers answer at the same instant (a race the service must settle).
            barrier = asyncio.Barrier(len(actions))
            await asyncio.gather(
                *(answer(users, flow, role, action, deadline, barrier) for role, action in actions.items())
            )
            return
        # Each confirmer answers at its own moment; a decliner after the owner accepted.
        await asyncio.sleep(users.rng.uniform(0, 0.5))
        order = ["owner", "new"] if flow.kind == "declined" or users.rng.random() < 0.5 else ["new", "owner"]
        for role in order:
            await answer(users, flow, role, actions[role], deadline)
    except Exception as exc:  # noqa: BLE001 - recorded and shown in the audit
        flow.error = f"{type(exc).__name__}: {exc}"[:500]


async def resend_before_answering(users: Users, flow: Flow, deadline: float) -> None:
    """The owner asks for new codes once both confirmers got theirs; then a code from before
    the resend must be refused, whichever clock the notifier keeps."""
    owner, new = email_of(flow.nic("owner")), email_of(flow.nic("new"))

    async def mailed(to: str, count: int) -> list[str] | None:
        found = await tokens_mailed(users.system, flow.request_id or "", to)
        return found if len(found) >= count else None

    wait = max(1.0, deadline - time.monotonic())
    (first, *_) = await eventually(lambda: mailed(owner, 1), timeout=wait, what=f"token email to {owner}", interval=0.3)
    await eventually(lambda: mailed(new, 1), timeout=wait, what=f"token email to {new}", interval=0.3)
    response = await users.call("POST", f"/v1/contact-changes/{flow.request_id}/resend", flow.nic("owner"), deadline=deadline)
    assert response.status_code == 202, f"resend: {response.status_code} {response.text}"
    for to in (owner, new):
        await eventually(lambda to=to: mailed(to, 2), timeout=wait, what=f"a second token email to {to}", interval=0.3)
    response = await users.call(
        "POST", f"/v1/contact-changes/{flow.request_id}/accept", flow.nic("owner"), json={"token": first}, deadline=deadline
    )
    assert response.status_code == 422, f"a code from before the resend: {response.status_code} {response.text}"


async def give_up_on_the_unreachable(users: Users, flow: Flow, deadline: float) -> None:
    """The owner reads in the request's history that the new contact could not be reached, and cancels."""
    path = f"/v1/contact-changes/{flow.request_id}"

    async def told() -> bool:
        response = await users.call("GET", path, flow.nic("owner"), deadline=deadline)
        return any("could not be reached" in (h["reason"] or "") for h in response.json()["history"])

    await eventually(told, timeout=max(1.0, deadline - time.monotonic()), what="the history to say who cannot be reached", interval=1)
    response = await users.call("POST", f"{path}/cancel", flow.nic("owner"), deadline=deadline)
    assert response.status_code == 200, f"cancel: {response.status_code} {response.text}"


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

    async def drain(self) -> list[tuple[str, str, dict]]:
        """(routing key, message id, data) of every event kept so far."""
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
                    )
                )
            await queue.delete(if_unused=False, if_empty=False)
        return found


class Republisher:
    """Publishes every message on the exchange a second time, after a random delay, so that each
    consumer gets everything twice and out of order (as redeliveries and racing publishers do)."""

    def __init__(self, system: System, rng: random.Random) -> None:
        self.system = system
        self.rng = rng
        self.copies = 0
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.system.amqp_url)
        channel = await self._connection.channel()
        self._exchange = await channel.get_exchange(f"{self.system.namespace}contacts")
        queue = await channel.declare_queue(f"{self.system.namespace}replay", exclusive=True)
        await queue.bind(self._exchange, routing_key="#")
        await queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            if (message.headers or {}).get("x-test-copy"):
                return
            copy = aio_pika.Message(
                message.body,
                message_id=message.message_id,
                content_type=message.content_type,
                headers={"x-test-copy": 1},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            task = asyncio.create_task(self._later(copy, message.routing_key or ""))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _later(self, copy: aio_pika.Message, routing_key: str) -> None:
        await asyncio.sleep(self.rng.uniform(0, 1.5))
        await self._exchange.publish(copy, routing_key=routing_key)
        self.copies += 1

    async def stop(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=10)
        if self._connection:
            await self._connection.close()


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
        )


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
    settle_timeout: float = 240,
) -> Audit:
    """Wait for every flow to end (at most STUCK_AFTER_SECONDS after the fault ended: what is
    not final then is stuck), then compare everything with what was promised."""
    result = Audit(fault, len(flows))
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
    for routing_key, message_id, data in events:
        if routing_key == "contact_change.completed":
            completed_ids.setdefault(data["request_id"], set()).add(message_id)
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


async def run_scenario(
    system: System,
    fault: str,
    count: int,
    inject: Callable[[list[Flow]], Awaitable[None]],
    *,
    seed: int | None = None,
    flow_timeout: float = 300,
    kinds: tuple[str, ...] = MIXED,
    answer_together: bool = False,
    unreachable: int = 0,
) -> Audit:
    """Feed `count` flows, run them concurrently, call `inject` while they are in flight, audit.
    The first `unreachable` flows name a new contact whose mail server refuses them for good."""
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    flows = make_flows(count, rng, kinds=kinds)
    for flow in flows[:unreachable]:
        flow.kind = "unreachable"
        system.sink.refuse(email_of(flow.nic("new")))
    await feed(system, flows)
    tap = EventTap(system, ("contact_change.completed",))
    await tap.bind()
    users = Users(system, rng, answer_together=answer_together)
    try:
        tasks = [asyncio.create_task(run_flow(users, flow, flow_timeout)) for flow in flows]
        await inject(flows)
        fault_ended = time.monotonic()
        await asyncio.gather(*tasks)
    finally:
        await users.close()
    result = await audit(system, flows, tap, fault, fault_ended=fault_ended)
    print(f"\n[{fault}] seed={seed} server errors retried={users.server_errors} {result.row()}")
    for problem in result.problems[:20]:
        print("  ", problem)
    return result


async def when_in_flight(flows: list[Flow], share: float = 0.3, timeout: float = 120) -> None:
    """Wait until `share` of the flows have been submitted: the fault then hits flows in every phase."""

    async def enough() -> bool:
        return sum(f.request_id is not None for f in flows) >= share * len(flows)

    await eventually(
        enough,
        timeout=timeout,
        what=f"{share:.0%} of the flows to be submitted",
        interval=0.1,
    )


# --- faults on the system's own processes -------------------------------------------------------


async def kill_and_restart(system: System, name: str, down_for: float) -> None:
    """SIGKILL every process of service `name` (no goodbye, no cleanup), start them again after
    `down_for` seconds, and wait until they consume and answer again."""
    keys = [key for key in system.processes if key.split("#")[0] == name]
    for key in keys:
        os.killpg(system.processes[key].pid, signal.SIGKILL)
        system.processes[key].wait()
    await asyncio.sleep(down_for)  # the outage itself
    for key in keys:
        replica = int(key.split("#")[1]) if "#" in key else 1
        spawn(system, name, replica)
    await wait_ready(system, consumers=len(keys), timeout=60)


async def smtp_outage(system: System, seconds: float) -> None:
    """Stop the SMTP server for `seconds`, then start a new one on the same port (it keeps the
    mails received so far, as a real mailbox would)."""
    old = system.sink
    old.stop()
    await asyncio.sleep(seconds)  # the outage itself
    sink = MailSink(old.smtp_host, old.smtp_port, old.http_port)
    for mail in old.store.messages():
        sink.store.add(mail.mail_from, list(mail.rcpt_tos), mail.raw)
    sink.start()
    system.sink = sink


JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def assert_no_secrets_in_logs(system: System) -> int:
    """No token that was mailed, no JWT and not the JWT secret in any log of the system's
    processes; returns how many tokens were looked for."""
    tokens = {match.group(2) for m in system.sink.store.messages() for match in TOKEN_LINK.finditer(m.text)}
    logs = system.logs()
    leaked = [t for t in tokens if t in logs]
    assert not leaked, f"{len(leaked)} token(s) found in the logs of {system.log_dir}"
    assert not JWT_SHAPE.search(logs), f"a JWT in the logs of {system.log_dir}"
    assert system.jwt_secret not in logs, "the JWT secret in the logs"
    return len(tokens)

"""Many concurrent contact-change flows driven like real users drive them (HTTP + email).

Each flow has its own service and its own people, so that every effect can be attributed to
exactly one flow: a mail by its recipient and Message-ID, an event by its request id.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from contacts_shared.contracts import (
    AccountUpserted,
    InvoiceIssued,
    PaymentMethodUpserted,
    ServiceUpserted,
    Zone,
)
from support import System, eventually

FINAL = {"done", "declined", "rejected", "failed", "cancelled", "expired"}
# What a user can meet: a 5xx or no answer at all; a fresh code (the newest they were mailed) refused.
UNANSWERED, REFUSED = "5xx or no answer", "fresh code refused"
TOKEN_LINK = re.compile(r"/requests/([0-9a-f-]{36})\?token=([A-Za-z0-9_\-%]+)")

# Token, heads-up and outcome emails each flow kind must produce: {role: kinds of mail}. The
# previous contact (the owner asked) gets a heads-up when the codes go out; none for a request
# the billing check refuses at once.
EXPECTED_MAILS = {
    "done": {"owner": ("token", "done"), "new": ("token", "done"), "old": ("heads-up", "done")},
    "declined": {"owner": ("token", "declined"), "new": ("token", "declined"), "old": ("heads-up",)},
    "rejected": {"owner": ("rejected",)},
    # The new contact's mail server refuses them for good: the owner cancels once the request's
    # history says so, and only the owner is mailed (and the previous contact told beforehand).
    "unreachable": {"owner": ("token", "cancelled"), "old": ("heads-up",)},
    # The owner asks for new codes before anyone answers: two token emails each, then done.
    "resent": {
        "owner": ("token", "token", "done"),
        "new": ("token", "token", "done"),
        "old": ("heads-up", "done"),
    },
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
        ours = f"%-{flows[0].tag}"  # the NICs of these flows (a scenario may follow another)
        (s,) = await system.sql("requests", "SELECT count(*) AS n FROM services WHERE admin LIKE $1", ours)
        (a,) = await system.sql("requests", "SELECT count(*) AS n FROM accounts WHERE nic LIKE $1", ours)
        (i,) = await system.sql("billing_check", "SELECT count(*) AS n FROM invoices WHERE nic LIKE $1", ours)
        return s["n"] == services and a["n"] == 4 * services and i["n"] == invoices

    await eventually(known, timeout=120, what="the world to reach the services", interval=0.2)


# --- driving a flow like a user ---------------------------------------------------------------


class Users:
    """HTTP calls as the users make them: retried while the service is away (connection refused,
    5xx), spread over the API replicas. Every such mishap is noted with its moment, for the audit
    to tell those inside a fault's window from those outside (failures)."""

    def __init__(self, system: System, rng: random.Random, *, answer_together: bool = False) -> None:
        self.system = system
        self.rng = rng
        self.answer_together = answer_together
        self.urls = [system.api_url, *system.replica_api_urls]
        self.client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64))
        self.mishaps: list[tuple[float, float, str, str]] = []  # (began, failed, UNANSWERED | REFUSED, what)

    def noted(self, kind: str, what: str, since: float | None = None) -> None:
        """A mishap, with when the call that met it began (`since`: a call made while a fault
        lasted may fail a moment after the fault is over, on a connection the fault cut) and
        when it failed."""
        now = time.monotonic()
        self.mishaps.append((since if since is not None else now, now, kind, what))

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, method: str, path: str, nic: str, *, deadline: float, **kwargs: object) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.system.jwt(nic)}",
            **kwargs.pop("headers", {}),
        }  # type: ignore[dict-item]
        pause = 0.1
        lost = False  # a try got no reply, or a 5xx: it may have been done all the same
        while True:
            url = self.rng.choice(self.urls) + path
            sent = time.monotonic()
            try:
                response = await self.client.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
                if response.status_code < 500:
                    response.after_a_lost_reply = lost  # type: ignore[attr-defined]
                    return response
                last = f"{response.status_code} {response.text[:200]}"
                # A 5xx may come after the commit (the connection cut while COMMIT was on its way).
                lost = True
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                lost = True
            self.noted(UNANSWERED, f"{method} {path}: {last}", since=sent)
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
    """Answer with the newest token the person received. A refusal of that token is noted (a
    failure outside a fault's window) and the answer tried again until the flow's deadline, so
    that the flow can go on: while the broker is away, a code mailed just before it went may not
    have reached the requests service, and is refused until it does."""
    nic = flow.nic(role)
    assert flow.request_id
    for _attempt in itertools.count():
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
        if response.after_a_lost_reply and await answered_already(users, flow, nic, action, deadline):
            return  # the try whose reply was lost (or a 5xx) went through all the same: the code is spent
        if (await tokens_mailed(users.system, flow.request_id, email_of(nic)))[-1] == token:
            users.noted(REFUSED, f"{action} as {role} of flow {flow.index}: {response.text[:200]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{action} as {role} was refused {_attempt + 1} times, until the flow's deadline")
        await asyncio.sleep(2)  # a user would try again, with the newest code they hold


async def answered_already(users: Users, flow: Flow, nic: str, action: str, deadline: float) -> bool:
    """Whether the request already shows this answer of `nic`, as a person reloading its page after
    an error would see (their earlier try may have gone through while its reply was lost)."""
    response = await users.call("GET", f"/v1/contact-changes/{flow.request_id}", nic, deadline=deadline)
    wanted = "accepted" if action == "accept" else "declined"
    return any(c["nic"] == nic and c["state"] == wanted for c in response.json()["confirmers"])


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
    (first, *_) = await eventually(
        lambda: mailed(owner, 1),
        timeout=wait,
        what=f"token email to {owner}",
        interval=0.3,
    )
    await eventually(lambda: mailed(new, 1), timeout=wait, what=f"token email to {new}", interval=0.3)
    response = await users.call(
        "POST",
        f"/v1/contact-changes/{flow.request_id}/resend",
        flow.nic("owner"),
        deadline=deadline,
    )
    # A 429 after a lost reply: the lost one was the resend (the next may come only in a minute).
    done = response.status_code == 202 or (response.status_code == 429 and response.after_a_lost_reply)  # type: ignore[attr-defined]
    assert done, f"resend: {response.status_code} {response.text}"
    for to in (owner, new):
        await eventually(
            lambda to=to: mailed(to, 2),
            timeout=wait,
            what=f"a second token email to {to}",
            interval=0.3,
        )
    response = await users.call(
        "POST",
        f"/v1/contact-changes/{flow.request_id}/accept",
        flow.nic("owner"),
        json={"token": first},
        deadline=deadline,
    )
    assert response.status_code == 422, f"a code from before the resend: {response.status_code} {response.text}"


async def give_up_on_the_unreachable(users: Users, flow: Flow, deadline: float) -> None:
    """The owner reads in the request's history that the new contact could not be reached, and cancels."""
    path = f"/v1/contact-changes/{flow.request_id}"

    async def told() -> bool:
        response = await users.call("GET", path, flow.nic("owner"), deadline=deadline)
        return any("could not be reached" in (h["reason"] or "") for h in response.json()["history"])

    await eventually(
        told,
        timeout=max(1.0, deadline - time.monotonic()),
        what="the history to say who cannot be reached",
        interval=1,
    )
    response = await users.call("POST", f"{path}/cancel", flow.nic("owner"), deadline=deadline)
    assert response.status_code == 200, f"cancel: {response.status_code} {response.text}"


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

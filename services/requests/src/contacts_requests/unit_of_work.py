"""The unit of work of the requests service: one transaction in which a use case loads requests,
and saves what the domain decided (`contact_change.Decision`): each event's writes (the state,
the history line, the confirmer, the replica) and the messages that announce it, all in one
statement per decision (`store.Changes`), which also claims the message being handled, if any
(`handling.Runs.claimed_on_save`). All of it commits, or none of it.

    async with UnitOfWork(conn) as uow:
        loaded = await uow.load(request_id, for_update=True)
        await uow.record(loaded.change.cancel(nic), loaded.accounts)
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

import asyncpg
import structlog
from asyncpg.transaction import Transaction
from contacts_shared.contracts import (
    BatchConfirmer,
    BatchItem,
    ContactChangeBatchValidationRequested,
    ContactChangeCompleted,
    ContactChangeRequested,
    ContactChangeSupportActed,
    Contract,
    RequestState,
    utcnow,
)
from contacts_shared.crashpoints import crash_point
from contacts_shared.handling import AlreadyClaimed, PendingClaim, take_pending_claim
from contacts_shared.observability import FLOW_SECONDS
from contacts_shared.outbox import enqueue, queue_in

from contacts_requests import batch_store, events, replicas, store
from contacts_requests.announcements import about, state_changed, validation_request
from contacts_requests.contact_change import ContactChange, Decision
from contacts_requests.domain import FINAL_STATES, Account, batch_codes_due, unreachable

log = structlog.get_logger("contacts.requests")


class UnitOfWork:
    """A transaction on `conn`: its own, or the one the connection is in already (a consumer's
    handler runs in the consumer's, which also claims the message)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._transaction: Transaction | None = None
        self._batches: set[str] = set()  # batches whose requests moved: their codes may be due
        self._claims: list[PendingClaim] = []  # the message's claim, once a statement took it

    async def __aenter__(self) -> Self:
        if not self.conn.is_in_transaction():
            self._transaction = self.conn.transaction()
            await self._transaction.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                for batch_id in sorted(self._batches):
                    await self._ask_batch_codes(uuid.UUID(batch_id))
        except BaseException:
            if self._transaction is not None:
                await self._transaction.rollback()
            raise
        finally:
            self._batches.clear()
        if self._transaction is not None:
            await (self._transaction.commit() if exc_type is None else self._transaction.rollback())

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A part that may fail without spoiling the rest: its writes and its messages are undone
        together (and a claim a statement of it took is pending again)."""
        claims = len(self._claims)
        try:
            async with self.conn.transaction():
                yield
        except BaseException:
            for pending in self._claims[claims:]:
                pending.taken = False
            del self._claims[claims:]
            raise

    async def load(self, request_id: uuid.UUID, **options: Any) -> store.LoadedChange | None:
        """The request, its parties' accounts and its confirmers (`store.load`'s options)."""
        return await store.load(self.conn, request_id, **options)

    async def record(self, decision: Decision, accounts: Mapping[str, Account], *, idempotency_key: str | None = None) -> None:
        """Write each event of `decision`, in order, and queue the messages that announce them,
        in one statement. `accounts`: those of the request's parties (their emails go in the
        messages)."""
        changes, messages = store.Changes(), []
        for event in decision.events:
            await self._write(changes, messages, decision.change, event, accounts, idempotency_key)
        await self._save(changes, messages)
        if any(isinstance(event, events.ContactReplaced) for event in decision.events):
            crash_point("during-apply")  # the contact changed and `done` written, not committed

    async def _save(self, changes: store.Changes, messages: list[Contract]) -> None:
        """Run `changes` with `messages` queued, as one statement; it also claims the message
        handled, if its claim is pending (then a duplicate raises `AlreadyClaimed`)."""
        queue_in(changes, messages)
        messages.clear()
        if changes.empty:
            return
        if (pending := take_pending_claim(self.conn, changes)) is not None:
            self._claims.append(pending)
        if not await changes.run(self.conn):
            raise AlreadyClaimed

    async def _write(
        self,
        changes: store.Changes,
        messages: list[Contract],
        change: ContactChange,
        event: events.Event,
        accounts: Mapping[str, Account],
        idempotency_key: str | None,
    ) -> None:
        request_id = uuid.UUID(change.id)
        match event:
            case events.Submitted(requester):
                changes.insert_request(change)
                messages.append(self._announce(change, events.StateChanged(RequestState.checking, requester, "submitted"), accounts, idempotency_key))
            case events.StateChanged(state, actor, reason):
                changes.set_state(request_id, state, actor, reason)
                if state in FINAL_STATES and change.created_at is not None:
                    # Observed before the commit: a transaction retried after a failure may count twice.
                    FLOW_SECONDS.labels(state.value).observe((utcnow() - change.created_at).total_seconds())
                messages.append(self._announce(change, event, accounts, idempotency_key))
                if change.batch_id is not None:
                    self._batches.add(change.batch_id)
            case events.Answered(nic, accepted):
                # Answers are taken only while the request waits for them (check_answerable).
                reason = f"{'accepted' if accepted else 'declined'} by {nic}"
                changes.record_answer(request_id, nic, change.confirmers[nic], RequestState.validating, reason)
            case events.CodeRefused(nic):
                changes.count_token_failure(request_id, nic)
            case events.VettingAsked(phase, again):
                if again:
                    changes.mark_vetting_asked(request_id, change.state)
                    log.warning("billing check asked again", request_id=change.id, phase=phase.value)
                messages.append(ContactChangeRequested(**about(change), phase=phase))
            case events.CodesAsked(nics, resent_by, told, reminder, why):
                generations = None
                if resent_by is not None:
                    # The new round's numbers go in the message: saved so far, then asked for.
                    await self._save(changes, messages)
                    generations = await store.new_round_of_codes(self.conn, request_id, list(nics))
                    what = "a reminder with new validation codes sent" if reminder else "validation codes sent again"
                    note = f"{what} to {', '.join(nics)}" + (f": {why}" if why else "")
                    changes.history(request_id, change.state, resent_by, note)
                if nics or told:  # a batch's first codes go in its own message
                    messages.append(validation_request(change, nics, accounts, generations, told, reminder=reminder))
            case events.ReminderPlanned(sent, at):
                changes.plan_reminder(request_id, sent, at)
            case events.ContactReplaced():
                replicas.set_contact(changes, change.service, change.type, change.to)
                messages.append(ContactChangeCompleted(**about(change), completed_at=utcnow()))
            case events.NotReached(nic, kind, smtp_code):
                changes.history(request_id, change.state, "system", unreachable(nic, kind, smtp_code))
            case events.CodeUnlocked(nic, actor, reason):
                changes.unlock_code(request_id, nic)
                changes.history(request_id, change.state, actor, f"the validation code of {nic} unlocked: {reason}")
            case events.SupportActed(agent, action, reason, confirmer):
                messages.append(
                    ContactChangeSupportActed(**about(change), agent=agent, action=action, reason=reason, confirmer=confirmer, acted_at=utcnow())
                )
                log.info("support action", request_id=change.id, agent=agent, action=action, confirmer=confirmer)

    async def _ask_batch_codes(self, batch_id: uuid.UUID) -> None:
        """The batch's codes, in one message, once none of its requests is being checked (the
        domain says when and to whom); then never again."""
        if await batch_store.codes_asked(self.conn, batch_id):
            return  # the usual case once a batch is under way: no lock, every transition after the codes
        facts = await batch_store.lock_facts(self.conn, batch_id)
        if facts is None or (due := batch_codes_due([r.member for r in facts.requests], facts.codes_asked)) is None:
            return
        await batch_store.mark_codes_asked(self.conn, batch_id)
        accounts = await replicas.accounts_by_nic(self.conn, list(due))
        confirmers = [
            BatchConfirmer(nic=nic, email=accounts[nic].email, request_ids=ids, language=accounts[nic].language)
            for nic, ids in due.items()
            if nic in accounts
        ]
        asked = {rid for c in confirmers for rid in c.request_ids}
        items = [r for r in facts.requests if r.member.request_id in {str(i) for i in asked}]
        if not items:
            return  # every request was refused or ended: no code to send
        await enqueue(
            self.conn,
            ContactChangeBatchValidationRequested(
                batch_id=batch_id,
                requester=facts.requester,
                items=[BatchItem(request_id=r.member.request_id, service=r.service, type=r.type, from_=r.from_, to=r.to) for r in items],
                confirmers=confirmers,
                expires_at=min(r.expires_at for r in items),
            )
        )
        log.info("batch codes asked", batch_id=str(batch_id), requests=len(items), confirmers=len(confirmers))

    def _announce(self, change: ContactChange, moved: events.StateChanged, accounts: Mapping[str, Account], idempotency_key: str | None) -> Contract:
        """Tell the notifier and other systems the request's new state, with its parties' emails."""
        log.info("request state changed", request_id=change.id, state=moved.state.value, actor=moved.actor)
        return state_changed(change, moved.state, moved.reason, accounts, idempotency_key)

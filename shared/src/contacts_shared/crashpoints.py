"""Named crash points: the steps where a crash hurts most, for the fault suite to kill a process
exactly there (the idea of FoundationDB's "buggify" and of failpoint libraries).

With `CONTACTS_CRASH_AT=<point>:<n>` in its environment a process kills itself with SIGKILL (no
cleanup, as a power cut) the n-th time it reaches `<point>`. Without it, which is how every
deployment runs, reaching a point costs one comparison. An unknown point name refuses to start,
so that a typo cannot make a fault test pass by crashing nowhere.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "after-commit-before-ack",  # a message's effects committed, the broker not told (consumer)
    "after-publish-before-delete",  # an outbox batch confirmed by the broker, its rows not deleted (relay)
    "after-reply-before-ack",  # a verdict confirmed by the broker, its question not acked (billing-check)
    "after-smtp-before-mark",  # an email accepted by the SMTP server, not marked sent (notifier)
    "during-apply",  # the contact changed inside the transaction that records `done` (requests)
)

_point, _, _count = os.environ.get("CONTACTS_CRASH_AT", "").partition(":")
if _point and (_point not in POINTS or not _count.isdigit() or int(_count) < 1):
    raise SystemExit(f"CONTACTS_CRASH_AT={_point}:{_count}: expected <point>:<n ≥ 1>, point one of {', '.join(POINTS)}")
_left = int(_count) if _point else 0


def crash_point(name: str) -> None:
    """Die here if this is the armed point, reached for the n-th time."""
    global _left
    if name != _point:
        return
    _left -= 1
    if _left == 0:
        os.kill(os.getpid(), signal.SIGKILL)

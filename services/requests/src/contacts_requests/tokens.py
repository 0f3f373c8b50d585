"""Whether a presented validation code is good (spec section 4), pure: the requests service
knows of each confirmer's code only its hash, its expiry and how many wrong tries it took."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from contacts_shared.contracts import hash_token

# Wrong tries after which a confirmer's code is locked until a resend.
MAX_TOKEN_FAILURES = 5


@dataclass(frozen=True)
class TokenSlot:
    """What the requests service knows of one confirmer's token: only its hash."""

    token_hash: str | None
    expires_at: datetime | None
    failures: int


def is_locked(slot: TokenSlot) -> bool:
    """Too many wrong tries: the code is refused, right or wrong, until a resend or an agent's unlock."""
    return slot.failures >= MAX_TOKEN_FAILURES


def check_token(slot: TokenSlot, presented: str, now: datetime) -> bool:
    """True when the token matches; the caller counts a failure otherwise.

    A locked, expired, missing or foreign token is refused the same way as a wrong one,
    so that the answer tells a guesser nothing.
    """
    if slot.token_hash is None or is_locked(slot):
        return False
    if slot.expires_at is not None and slot.expires_at <= now:
        return False
    return hmac.compare_digest(slot.token_hash, hash_token(presented))

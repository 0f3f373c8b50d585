"""Identity provider JWTs: HS256, `sub` is the NIC handle, `exp` required."""

from __future__ import annotations

import time

import jwt

from contacts_shared.contracts import normalize_nic

ALGORITHM = "HS256"


class NotAuthenticated(Exception):
    """No usable identity: missing, expired, badly signed or malformed token."""


def mint_token(secret: str, nic: str, ttl_seconds: int = 3600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": normalize_nic(nic), "iat": now, "exp": now + ttl_seconds}, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> str:
    """Return the NIC the token was issued to, or raise NotAuthenticated."""
    try:
        # `algorithms` pinned: a token declaring `alg: none` or another algorithm is refused.
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
        return normalize_nic(claims["sub"])
    except (jwt.PyJWTError, ValueError) as exc:
        raise NotAuthenticated(str(exc)) from None

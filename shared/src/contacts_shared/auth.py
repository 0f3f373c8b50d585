"""Identity provider JWTs: `sub` is the NIC handle; `exp` and `iat` are required.

Two kinds of signature are accepted: HS256 under the shared secret (`CONTACTS_JWT_SECRET`, what
`contacts token` and the development sign-in mint), and RS256 or ES256 under a key of the
identity provider's JSON Web Key Set (`CONTACTS_JWT_JWKS_URL`, as Keycloak, Auth0 or a cloud IAM
publish it). PyJWT does all the key handling: fetching and caching the set, finding the token's
`kid`, fetching again when an unknown one appears (key rotation).

A token's roles are read from one claim (`CONTACTS_JWT_ROLES_CLAIM`, by default `roles`; a dotted
path such as `realm_access.roles` reaches into Keycloak's nesting): a list of names, or one
string of names separated by spaces. `support` makes the caller a support agent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt

from contacts_shared.contracts import normalize_nic

ALGORITHM = "HS256"
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
# Clocks of the identity provider and this service may differ by this much.
LEEWAY_SECONDS = 30
# How long the key set is kept before it is fetched again, and the longest wait for it.
JWKS_CACHE_SECONDS = 300
JWKS_TIMEOUT_SECONDS = 5
# The claim that holds a token's roles, and the role of support agents.
ROLES_CLAIM = "roles"
SUPPORT_ROLE = "support"


class NotAuthenticated(Exception):
    """No usable identity: missing, expired, badly signed or malformed token."""


@dataclass(frozen=True)
class Caller:
    """Who a valid token names: a NIC, and the roles the identity provider gave it."""

    nic: str
    roles: frozenset[str] = frozenset()

    @property
    def is_agent(self) -> bool:
        return SUPPORT_ROLE in self.roles


def mint_token(secret: str, nic: str, ttl_seconds: int = 3600, *, roles: Collection[str] = (), roles_claim: str = ROLES_CLAIM) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": normalize_nic(nic), "iat": now, "exp": now + ttl_seconds}
    if roles:
        # `a.b` nests, as the verifier reads it.
        *outer, last = roles_claim.split(".")
        holder = claims
        for name in outer:
            holder = holder.setdefault(name, {})
        holder[last] = sorted(roles)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def roles_in(claims: dict[str, Any], roles_claim: str = ROLES_CLAIM) -> frozenset[str]:
    """The roles a token's claims hold at `roles_claim` (a dotted path); none when the claim is
    missing or of another shape."""
    value: Any = claims
    for name in roles_claim.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class TokenVerifier:
    """Checks a token's signature, lifetime and (when set) issuer and audience."""

    def __init__(
        self,
        secret: str,
        *,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        max_lifetime: timedelta = timedelta(hours=24),
        roles_claim: str = ROLES_CLAIM,
    ) -> None:
        self._secret = secret
        self._jwks = (
            # The set is cached as a whole, not key by key: a key the provider drops stops
            # working when the set is fetched again (a new `kid`, or JWKS_CACHE_SECONDS later).
            jwt.PyJWKClient(jwks_url, cache_keys=False, lifespan=JWKS_CACHE_SECONDS, timeout=JWKS_TIMEOUT_SECONDS) if jwks_url else None
        )
        self._issuer = issuer
        self._audience = audience
        self._max_lifetime = max_lifetime.total_seconds()
        self._roles_claim = roles_claim

    async def verify(self, token: str) -> Caller:
        """The NIC the token was issued to and its roles, or NotAuthenticated saying why not."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            required = ["exp", "iat", "sub"]
            if algorithm == ALGORITHM:
                # Our own tokens (`contacts token`, the development sign-in): no issuer or
                # audience to check, nobody else holds the secret.
                key: object = self._secret
                issuer = audience = None
            elif algorithm in PUBLIC_KEY_ALGORITHMS and self._jwks is not None:
                # The set is cached; only a first use, a new `kid` or an expired cache goes out
                # to the network, in a thread so that the event loop never waits on it.
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
                issuer, audience = self._issuer, self._audience
                required += (["iss"] if issuer else []) + (["aud"] if audience else [])
            else:
                raise NotAuthenticated(f"tokens signed with {algorithm!r} are not accepted")
            # `algorithms` pinned to the header's, checked above: `none`, or HS256 under a public
            # key, never passes.
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[algorithm],
                issuer=issuer,
                audience=audience,
                leeway=LEEWAY_SECONDS,
                options={"require": required, "verify_aud": audience is not None},
            )
            if claims["exp"] - claims["iat"] > self._max_lifetime:
                raise NotAuthenticated(f"the token lives longer than {self._max_lifetime:g} s")
            return Caller(normalize_nic(claims["sub"]), roles_in(claims, self._roles_claim))
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise NotAuthenticated(str(exc)) from None

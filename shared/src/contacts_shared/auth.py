"""Identity provider JWTs: `sub` is the NIC handle; `exp` and `iat` are required.

Two kinds of signature are accepted: HS256 under the shared secret (`CONTACTS_JWT_SECRET`, what
`contacts token` and the development sign-in mint), and RS256 or ES256 under a key of the
identity provider's JSON Web Key Set (`CONTACTS_JWT_JWKS_URL`, as Keycloak, Auth0 or a cloud IAM
publish it). PyJWT does all the key handling: fetching and caching the set, finding the token's
`kid`, fetching again when an unknown one appears (key rotation).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import jwt

from contacts_shared.contracts import normalize_nic

ALGORITHM = "HS256"
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
# Clocks of the identity provider and this service may differ by this much.
LEEWAY_SECONDS = 30
# How long the key set is kept before it is fetched again, and the longest wait for it.
JWKS_CACHE_SECONDS = 300
JWKS_TIMEOUT_SECONDS = 5


class NotAuthenticated(Exception):
    """No usable identity: missing, expired, badly signed or malformed token."""


def mint_token(secret: str, nic: str, ttl_seconds: int = 3600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": normalize_nic(nic), "iat": now, "exp": now + ttl_seconds}, secret, algorithm=ALGORITHM)


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

    async def verify(self, token: str) -> str:
        """The NIC the token was issued to, or NotAuthenticated saying why not."""
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
            return normalize_nic(claims["sub"])
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise NotAuthenticated(str(exc)) from None

"""Forged identity tokens, against a requests service that trusts both its HS256 secret and an
identity provider's JWKS (served here, with RSA and EC keys this test generates), with the
issuer and audience set: every forgery gets 401 and changes nothing; genuine RS256 and ES256
tokens work, and so does a key the provider rotates in, while the key rotated out stops."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from security.table import tried
from seed import HOSTING, OWNER, WEBMASTER
from support import System, eventually, free_port

ISSUER = "https://idp.example.test/realms/contacts"
AUDIENCE = "contacts"
SUBMIT = f"/v1/services/{quote(HOSTING, safe='')}/contact-changes"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(cls) -> SigningKey:
        return cls(uuid.uuid4().hex, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls) -> SigningKey:
        return cls(uuid.uuid4().hex, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if self.algorithm == "RS256" else jwt.algorithms.ECAlgorithm
        return {**algorithm.to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": kid or self.kid})


@dataclass
class IdentityProvider:
    """A JWKS endpoint whose keys the test changes (rotation)."""

    port: int
    keys: list[SigningKey] = field(default_factory=list)
    fetches: int = 0

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/contacts/protocol/openid-connect/certs"


def claims(nic: str = OWNER, *, lifetime: int = 300, issued: float | None = None, **overrides: Any) -> dict[str, Any]:
    now = int(time.time() if issued is None else issued)
    return {"sub": nic, "iat": now, "exp": now + lifetime, "iss": ISSUER, "aud": AUDIENCE, **overrides}


@pytest.fixture(scope="module")
def provider() -> Iterator[IdentityProvider]:
    idp = IdentityProvider(free_port(), [SigningKey.rsa(), SigningKey.ec()])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp.fetches += 1
            body = json.dumps({"keys": [k.jwk() for k in idp.keys]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", idp.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield idp
    server.shutdown()


@pytest.fixture(scope="module")
def world_settings(provider: IdentityProvider) -> dict[str, str]:
    return {"CONTACTS_JWT_JWKS_URL": provider.jwks_url, "CONTACTS_JWT_ISSUER": ISSUER, "CONTACTS_JWT_AUDIENCE": AUDIENCE}


async def status_with(world: System, token: str) -> int:
    """What the API answers a submission carrying `token`, checking that it changed nothing
    unless it was let in."""
    before = (await world.sql("requests", "SELECT count(*) AS n FROM contact_changes"))[0]["n"]
    async with world.api() as client:
        response = await client.post(SUBMIT, json={"tech": WEBMASTER}, headers={"Authorization": f"Bearer {token}"})
    after = (await world.sql("requests", "SELECT count(*) AS n FROM contact_changes"))[0]["n"]
    if response.status_code == 401:
        assert response.headers["content-type"] == "application/problem+json"
        assert after == before, "a refused token changed something"
    elif response.status_code == 202:  # let in: leave the service free for the next attempt
        (item,) = response.json()["items"]
        async with world.api(OWNER) as owner:
            assert (await owner.post(f"/v1/contact-changes/{item['id']}/cancel")).status_code == 200
    return response.status_code


async def accepted(world: System, token: str) -> bool:
    return await status_with(world, token) == 202


async def test_genuine_provider_tokens_are_accepted(world: System, provider: IdentityProvider) -> None:
    rsa_key, ec_key = provider.keys
    assert await status_with(world, rsa_key.sign(claims())) == 202
    assert await status_with(world, ec_key.sign(claims())) == 202
    assert await status_with(world, world.jwt(OWNER)) == 202  # and the shared secret's HS256 still


def hs256_by_hand(payload: dict[str, Any], key: bytes, kid: str) -> str:
    """An HS256 token keyed with arbitrary bytes (PyJWT itself refuses a public key as a secret)."""

    def part(data: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    signed = part({"alg": "HS256", "typ": "JWT", "kid": kid}) + b"." + part(payload)
    signature = base64.urlsafe_b64encode(hmac.new(key, signed, hashlib.sha256).digest()).rstrip(b"=")
    return (signed + b"." + signature).decode()


def forgeries(provider: IdentityProvider, secret: str) -> dict[str, str]:
    rsa_key = provider.keys[0]
    stranger = SigningKey.rsa()
    public_pem = rsa_key.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    unsigned = jwt.encode(claims(), None, algorithm="none")
    return {
        "unsigned (alg none)": unsigned,
        "HS256 under a wrong secret": jwt.encode(claims(), "not-the-secret-" + "x" * 32, algorithm="HS256"),
        "HS256 keyed with the provider's public key (algorithm confusion)": hs256_by_hand(claims(), public_pem, rsa_key.kid),
        "RS256 by a key the provider never published": stranger.sign(claims()),
        "RS256 by another key under a published kid": stranger.sign(claims(), kid=rsa_key.kid),
        "wrong issuer": rsa_key.sign(claims(iss="https://evil.example.test/")),
        "wrong audience": rsa_key.sign(claims(aud="another-application")),
        "no audience": rsa_key.sign({k: v for k, v in claims().items() if k != "aud"}),
        "expired (past the 30 s leeway)": rsa_key.sign(claims(issued=time.time() - 400, lifetime=300)),
        "too long-lived (25 h, the maximum is 24 h)": rsa_key.sign(claims(lifetime=25 * 3600)),
        "no issued-at (lifetime unknown)": rsa_key.sign({k: v for k, v in claims().items() if k != "iat"}),
        "HS256 from the shared secret but for 30 days": jwt.encode(claims(lifetime=30 * 86400), secret, algorithm="HS256"),
    }


FORGERIES = [
    "unsigned (alg none)",
    "HS256 under a wrong secret",
    "HS256 keyed with the provider's public key (algorithm confusion)",
    "RS256 by a key the provider never published",
    "RS256 by another key under a published kid",
    "wrong issuer",
    "wrong audience",
    "no audience",
    "expired (past the 30 s leeway)",
    "too long-lived (25 h, the maximum is 24 h)",
    "no issued-at (lifetime unknown)",
    "HS256 from the shared secret but for 30 days",
]


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_forged_tokens_are_refused(world: System, provider: IdentityProvider, forgery: str) -> None:
    token = forgeries(provider, world.jwt_secret)[forgery]
    assert await status_with(world, token) == 401
    # The same token as the pages' session cookie signs nobody in.
    async with world.api() as browser:
        browser.cookies.set("contacts_session", token)
        page = await browser.get("/contacts")
    assert page.status_code == 303 and page.headers["location"].startswith("/signin"), page.status_code
    tried(f"forged JWT: {forgery}", "401 problem details (API), sign-in page (pages)")


async def test_a_rotated_key_works_at_once_and_the_one_rotated_out_stops(world: System, provider: IdentityProvider) -> None:
    old = provider.keys[0]
    assert await status_with(world, old.sign(claims())) == 202
    new = SigningKey.rsa()
    provider.keys = [new, provider.keys[1]]
    fetched = provider.fetches
    # A kid not in the cached set makes the service fetch the set again, at once unless an
    # unknown kid already did in the last 30 s (PyJWT's cooldown, against a flood of them).
    await eventually(lambda: accepted(world, new.sign(claims())), timeout=45, interval=1, what="the new key to be accepted")
    assert provider.fetches > fetched
    assert await status_with(world, old.sign(claims())) == 401
    tried("JWT by a key the provider has rotated out", "401 once the set is fetched again (a new kid, or 5 min)")

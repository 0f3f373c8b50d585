"""Which roles a token's claims hold (pure: `roles_in`), and tokens minted with roles."""

from __future__ import annotations

import jwt
import pytest
from contacts_shared.auth import Caller, TokenVerifier, mint_token, roles_in

SECRET = "s" * 32


@pytest.mark.parametrize(
    ("claims", "claim", "roles"),
    [
        ({"roles": ["support", "billing"]}, "roles", {"support", "billing"}),
        ({"scope": "openid support"}, "scope", {"openid", "support"}),  # space-separated, as OAuth scopes
        ({"realm_access": {"roles": ["support"]}}, "realm_access.roles", {"support"}),  # Keycloak
        ({"roles": "support"}, "realm_access.roles", set()),  # another claim
        ({"roles": {"support": True}}, "roles", set()),  # another shape
        ({"roles": ["support", 7, None]}, "roles", {"support"}),
        ({"realm_access": "support"}, "realm_access.roles", set()),
        ({}, "roles", set()),
    ],
)
def test_roles_are_read_from_the_configured_claim_only_in_a_known_shape(claims: dict, claim: str, roles: set[str]) -> None:
    assert roles_in(claims, claim) == roles


async def test_a_minted_token_with_the_support_role_names_an_agent() -> None:
    token = mint_token(SECRET, "ZZ99999-OVH", roles=["support"])
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["roles"] == ["support"]
    caller = await TokenVerifier(SECRET).verify(token)
    assert caller == Caller("zz99999-ovh", frozenset({"support"})) and caller.is_agent
    assert not (await TokenVerifier(SECRET).verify(mint_token(SECRET, "aa11111-ovh"))).is_agent

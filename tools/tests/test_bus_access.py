"""The definitions `contacts bus-definitions` writes, as pure data."""

from __future__ import annotations

from contacts_tools import bus_access


def test_passwords_are_hashed_as_rabbitmq_does() -> None:
    # The example of RabbitMQ's documentation ("Computing Password Hash"): salt 908DC60A, "test12".
    assert bus_access.password_hash("test12", bytes.fromhex("908DC60A")) == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    stored = bus_access.password_hash("s3cret")
    assert bus_access.hash_matches(stored, "s3cret") and not bus_access.hash_matches(stored, "s3cres")
    assert bus_access.password_hash("s3cret") != stored  # a fresh salt each time


def test_definitions_hold_every_user_its_permissions_and_no_password() -> None:
    passwords = {user: f"{user}-password" for user in bus_access.USERS}
    made = bus_access.definitions("t1_", "/", passwords, ("admin", "admin-password"))
    assert [u["name"] for u in made["users"]] == ["admin", *(f"t1_contacts-{u}" for u in bus_access.USERS)]
    assert made["users"][0]["tags"] == ["administrator"] and all(u["tags"] == [] for u in made["users"][1:])
    assert not any(password in str(made) for password in [*passwords.values(), "admin-password"])
    topics = {t["user"]: t for t in made["topic_permissions"]}
    assert topics["t1_contacts-billing-check"] == {
        "user": "t1_contacts-billing-check", "vhost": "/", "exchange": "t1_contacts", "write": r"^(contact_change\.vetted)$", "read": ".*"
    }
    assert {p["user"]: p["configure"] for p in made["permissions"]}["t1_contacts-other-systems"] == "^$"

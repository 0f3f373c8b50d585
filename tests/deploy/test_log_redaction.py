"""The log processor masks secrets by key and by shape, whatever the event says."""

from __future__ import annotations

from contacts_shared.auth import mint_token
from contacts_shared.logs import MASK, redact_secrets


def test_secrets_are_masked_by_key_and_by_shape() -> None:
    jwt = mint_token("x" * 32, "aa11111-ovh")
    event = redact_secrets(
        None,
        "info",
        {
            "event": f"rejected Bearer {jwt}",
            "token": "Zq3-secret-code",
            "smtp_password": "hunter2",
            "headers": {"Authorization": f"Bearer {jwt}", "accept": "application/json"},
            "url": "postgresql://contacts_requests:requests-dev-password@postgres:5432/contacts",
            "link": "http://localhost:8000/requests/1?token=Zq3-secret-code&x=1",
            "reasons": [f"bad {jwt}"],
            "request_id": "5f0c1b7e-1c1d-4f7e-9a57-0a3c7f5d8e21",
            "attempts": 3,
        },
    )
    text = repr(event)
    assert jwt not in text and "Zq3-secret-code" not in text and "hunter2" not in text
    assert "requests-dev-password" not in text
    assert event["token"] == event["smtp_password"] == event["headers"]["Authorization"] == MASK
    assert event["url"] == f"postgresql://contacts_requests:{MASK}@postgres:5432/contacts"
    assert event["link"] == f"http://localhost:8000/requests/1?token={MASK}&x=1"
    # What is not a secret is kept as it was.
    assert event["headers"]["accept"] == "application/json"
    assert event["request_id"] == "5f0c1b7e-1c1d-4f7e-9a57-0a3c7f5d8e21" and event["attempts"] == 3

"""The JSON bodies the API takes (their fields are validated by pydantic, each error naming its
field)."""

from __future__ import annotations

from contacts_shared.contracts import ContactType, Nic, ServiceId
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contacts_requests.batches import MAX_BATCH_ENTRIES


class ContactChangeBody(BaseModel):
    """The new holders wanted, by contact type; at least one."""

    model_config = ConfigDict(extra="forbid")

    admin: Nic | None = None
    tech: Nic | None = None
    billing: Nic | None = None

    def changes(self) -> dict[ContactType, str]:
        return {t: v for t in ContactType if (v := getattr(self, t.value)) is not None}


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200, description="the validation code from the email")


class BatchEntry(ContactChangeBody):
    """A service of a batch and the new holders wanted on it, by contact type; at least one."""

    service: ServiceId

    @model_validator(mode="after")
    def _names_one(self) -> BatchEntry:
        if not self.changes():
            raise ValueError("name at least one of admin, tech or billing")
        return self


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    changes: list[BatchEntry] = Field(min_length=1, max_length=MAX_BATCH_ENTRIES, description="one entry per service")

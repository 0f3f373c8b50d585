"""What every contract is made of: NIC handles, email addresses, times in UTC, the enumerations,
and `Contract`, the base of every message's data."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

__all__ = ["LANGUAGE_PATTERN", "NIC_PATTERN", "ContactType", "Contract", "Language", "Nic", "Phase", "RequestState", "ServiceId", "UtcDatetime", "Zone", "normalize_nic", "utcnow"]

NIC_PATTERN = re.compile(r"^[a-z]{2}[0-9]{1,9}-[a-z]{2,10}$")


def normalize_nic(value: Any) -> str:
    """Lower-case and trim a NIC handle, or raise ValueError naming what is wrong."""
    if not isinstance(value, str):
        raise ValueError("a NIC handle is a string such as aa00000-ovh")  # noqa: TRY004 - pydantic reports a ValueError, not a TypeError, as invalid input
    nic = value.strip().lower()
    if not NIC_PATTERN.match(nic):
        raise ValueError(
            f"{value!r} is not a NIC handle (expected two letters, digits, a dash and a suffix, like aa00000-ovh)"
        )
    return nic


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a timestamp must carry its time zone (RFC 3339, e.g. 2026-01-31T12:00:00Z)")
    return value.astimezone(UTC)


Nic = Annotated[
    str,
    BeforeValidator(normalize_nic),
    # What a publisher must send; consumers also trim it and lower-case it.
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[A-Za-z]{2}[0-9]{1,9}-[A-Za-z]{2,10}$",
            "description": "NIC handle, case-insensitive (stored and published lower-case), e.g. aa00000-ovh",
        }
    ),
]
ServiceId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
# A language tag (BCP 47), checked for its shape only: a primary language of 2 or 3 letters, then
# subtags (region, script, variant) of up to 8 letters or digits: fr, fr-CA, en-GB, zh-Hant-TW.
# Whoever reads it picks the nearest language it has (contacts_shared.i18n), English by default.
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
Language = Annotated[
    str,
    Field(
        min_length=2,
        max_length=35,
        pattern=LANGUAGE_PATTERN,
        description="The language the person reads, a BCP 47 tag (fr, fr-CA, en-GB); emails and pages use the nearest "
        "language available (fr for fr-CA), English when there is none",
    ),
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Zone(StrEnum):
    EU = "EU"
    CA = "CA"
    US = "US"


class ContactType(StrEnum):
    admin = "admin"
    tech = "tech"
    billing = "billing"


class RequestState(StrEnum):
    checking = "checking"
    rejected = "rejected"
    validating = "validating"
    declined = "declined"
    cancelled = "cancelled"
    expired = "expired"
    applying = "applying"
    failed = "failed"
    done = "done"


class Phase(StrEnum):
    submit = "submit"
    apply = "apply"


class Contract(BaseModel):
    # Unknown fields are ignored so that producers may add fields before consumers know them.
    # `from` is a keyword: models carrying it name the field `from_` with the alias `from`, and
    # are built by field name and serialised by alias (subclasses' configs merge with this one).
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True)


def with_examples(*examples: dict[str, Any]) -> ConfigDict:
    """A contract's config naming its examples (in its JSON Schema and the generated documents);
    it merges with `Contract`'s own."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})

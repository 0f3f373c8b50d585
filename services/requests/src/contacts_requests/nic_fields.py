"""What a person typed in a form's contact fields, read as NIC handles: the changes asked (an
empty field keeps the current contact) and, per field, why what was typed is not a NIC handle."""

from __future__ import annotations

from collections.abc import Mapping

from contacts_shared.contracts import ContactType, normalize_nic
from contacts_shared.i18n import _l


def typed_changes(values: Mapping[str, str]) -> tuple[dict[ContactType, str], dict[str, str]]:
    changes: dict[ContactType, str] = {}
    errors: dict[str, str] = {}
    for ctype in ContactType:
        typed = values.get(ctype.value, "").strip()
        if not typed:
            continue
        try:
            changes[ctype] = normalize_nic(typed)
        except ValueError:
            errors[ctype.value] = _l("“%(typed)s” is not a NIC handle; it looks like aa00000-ovh.", typed=typed)
    return changes, errors

"""The message contracts: one pydantic model per routing key, used by producer and consumer.

Every body on the wire is an `Envelope` whose `data` is the model registered for its `type`
in `MESSAGE_TYPES`. Unknown extra fields are ignored (forward compatibility); a field added
later must be optional so messages from older producers stay valid.

The models live by who publishes them: `inbound` (other systems), `contact_change` (the
project's services), on what they are built from (`base`) and what carries them (`envelope`);
every name is importable from here.
"""

from __future__ import annotations

# Each module's `__all__` says what it exports; every name is importable from here.
from contacts_shared.contracts import base, contact_change, envelope, inbound
from contacts_shared.contracts.base import *
from contacts_shared.contracts.contact_change import *
from contacts_shared.contracts.envelope import *
from contacts_shared.contracts.inbound import *

__all__ = [*base.__all__, *contact_change.__all__, *envelope.__all__, *inbound.__all__]  # noqa: PLE0604

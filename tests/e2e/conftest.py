from __future__ import annotations

import pytest
from seed import feed_world
from support import System


@pytest.fixture
async def world(system: System) -> System:
    """The system, fed with the seed's accounts, hosting plan and payment method."""
    return await feed_world(system)

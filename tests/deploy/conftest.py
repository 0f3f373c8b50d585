from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import System

# The tests of this folder share workload.py.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import Services


@pytest.fixture
def services(system: System) -> Services:
    """Start, stop and restart the system's service processes, and add replicas."""
    return Services(system)

"""Run only by tests/test_test_command.py: a run with a skipped test must fail."""

import pytest


def test_passes() -> None:
    assert True


def test_is_skipped() -> None:
    pytest.skip("something this machine lacks")

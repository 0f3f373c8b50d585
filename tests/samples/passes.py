"""Run only by tests/test_test_command.py: a run that needs nothing but the infrastructure."""

import os


def test_sees_the_infrastructure() -> None:
    assert os.environ["CONTACTS_TEST_DATABASE_URL"] and os.environ["CONTACTS_TEST_AMQP_URL"]

"""``poll_or_none``: the adapter's and the tracker's loops outlive a poll that raises (pure
logic; the broker restart in tests/test_resilience.py is where kafka-python was seen to)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError

from notice_bus.runtime.kafka import poll_or_none


class Consumer:
    def __init__(self, result: Any) -> None:
        self.result = result

    def poll(self, timeout_ms: int) -> Any:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_a_failed_poll_is_told_and_gives_none(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert poll_or_none(Consumer(KafkaConnectionError("111 ECONNREFUSED")), 10, "FR") is None
    assert "FR: cannot poll the broker" in caplog.text and "ECONNREFUSED" in caplog.text


def test_a_poll_that_works_gives_its_records() -> None:
    assert poll_or_none(Consumer({"tp": [1, 2]}), 10, "FR") == {"tp": [1, 2]}
    assert poll_or_none(Consumer({}), 10, "FR") == {}


def test_other_errors_are_not_swallowed() -> None:
    with pytest.raises(ZeroDivisionError):
        poll_or_none(Consumer(ZeroDivisionError()), 10, "FR")

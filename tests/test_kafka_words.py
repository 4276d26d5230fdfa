"""Kafka's errors as people read them, and the retry of the transient ones.

kafka-python's texts can be the repr of whole metadata responses; a restart of the broker is
also a time when partitions have no leader for a moment. The real restart is in
``test_broker_cli``; these pin the wording and the retry rule on kafka-python's own classes."""

from __future__ import annotations

import logging

import pytest
from kafka.errors import (
    KafkaError,
    LeaderNotAvailableError,
    TopicAuthorizationFailedError,
)

from notice_bus.runtime.kafka import explain, retry_transient
from notice_bus.runtime.settings import Settings

DUMP = "MetadataResponsePartition(error_code=5, partition_index=0, leader_id=-1, replica_nodes=[1])"


def test_a_partition_without_leader_is_worded() -> None:
    text = explain(LeaderNotAvailableError(DUMP * 10))
    assert (
        text == "no leader yet for a partition (the broker is starting) [LeaderNotAvailableError]"
    )


def test_an_error_without_words_is_named_and_cut_short() -> None:
    text = explain(KafkaError(DUMP * 10))
    assert text.startswith("KafkaError: MetadataResponsePartition(") and text.endswith("…")
    assert len(text) < 240


def test_transient_errors_are_retried_and_said(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise LeaderNotAvailableError(DUMP)
        return "sent"

    with caplog.at_level(logging.WARNING, logger="notice_bus.kafka"):
        assert retry_transient(Settings(broker_timeout_s=10), "sending", flaky) == "sent"
    assert len(calls) == 3
    assert "sending: no leader yet for a partition" in caplog.text and "retrying" in caplog.text
    assert "error_code" not in caplog.text


def test_a_refusal_is_not_retried() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise TopicAuthorizationFailedError("notices.FR")

    with pytest.raises(TopicAuthorizationFailedError):
        retry_transient(Settings(broker_timeout_s=10), "sending", refused)
    assert calls == [1]


def test_retries_stop_at_the_broker_timeout() -> None:
    def never() -> None:
        raise LeaderNotAvailableError(DUMP)

    with pytest.raises(LeaderNotAvailableError):
        retry_transient(Settings(broker_timeout_s=1), "sending", never)

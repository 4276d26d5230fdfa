"""How the identity check reads kafka-python's connection failures: a refusal named at once,
CLOSES closes in a row of accepted connections as a refusal, anything else not. The real
broker's refusals are in ``test_security``; these pin the counting on kafka-python's classes."""

from __future__ import annotations

import logging
import threading

from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError

from notice_bus.errors import AuthenticationFailed
from notice_bus.runtime.identity import CLOSES, _Listen
from notice_bus.runtime.settings import Settings

SCRAM = Settings(
    security_protocol="SASL_SSL", sasl_username="bureau-FR", sasl_password="x", ssl_cafile="ca"
)


def heard(*failures: BaseException, thread: str = "ours") -> _Listen:
    listen = _Listen(SCRAM, threading.Event(), {"ours"})
    for exc in failures:
        record = logging.LogRecord(
            "kafka.net.manager", logging.WARNING, __file__, 1,
            "Bootstrap connection to %s failed: %s (backoff %.2f secs)",
            ("bootstrap-0", exc, 0.1), None,
        )  # fmt: skip
        record.threadName = thread
        listen.handle(record)
    return listen


def closed() -> KafkaConnectionError:
    return KafkaConnectionError("socket disconnected")


def test_a_sasl_failure_is_a_refusal_at_once() -> None:
    listen = heard(SaslAuthenticationFailedError("invalid credentials"))
    assert isinstance(listen.refusal, AuthenticationFailed) and listen.heard.is_set()


def test_closes_in_a_row_are_a_refusal_and_fewer_are_not() -> None:
    assert heard(*(closed() for _ in range(CLOSES - 1))).refusal is None
    listen = heard(*(closed() for _ in range(CLOSES)))
    assert isinstance(listen.refusal, AuthenticationFailed)
    assert f"closed {CLOSES} connections in a row" in str(listen.refusal)


def test_another_failure_between_closes_starts_the_count_again() -> None:
    failures = [closed(), closed(), KafkaTimeoutError(), closed(), closed()]
    assert heard(*failures).refusal is None


def test_one_failure_logged_twice_counts_once() -> None:
    once = closed()
    assert heard(*[once] * CLOSES).refusal is None


def test_another_clients_failures_are_not_ours() -> None:
    assert heard(SaslAuthenticationFailedError("x"), thread="kafka-io-other").refusal is None

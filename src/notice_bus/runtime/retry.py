"""Retry policy: retry exactly the errors whose class says they are retriable."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
)

from notice_bus.runtime.settings import Settings

log = logging.getLogger("notice_bus.retry")


def is_retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False))


def backoff(initial_s: float, max_s: float, jitter_s: float) -> Callable[[RetryCallState], float]:
    """The wait before retry n (from 1): ``min(initial_s * 2**(n-1) + U(0, jitter_s), max_s)``.

    tenacity's ``wait_exponential_jitter`` takes ``initial`` up to 9.1 and deprecates it for
    ``multiplier`` from 9.2.1; a plain callable works the same on every version we allow."""

    def wait(state: RetryCallState) -> float:
        exponent = min(state.attempt_number - 1, 60)  # past max_s long before; no overflow
        return min(initial_s * 2.0**exponent + random.uniform(0, jitter_s), max_s)

    return wait


def retrying(settings: Settings) -> Retrying:
    """Exponential backoff with jitter, limits from ``settings``; re-raises the last error."""
    return Retrying(
        retry=retry_if_exception(is_retriable),
        stop=stop_after_attempt(settings.retry_attempts),
        wait=backoff(settings.retry_initial_s, settings.retry_max_s, settings.retry_initial_s),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )

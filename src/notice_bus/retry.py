"""Retry policy: retry exactly the errors whose class says they are retriable."""

from __future__ import annotations

import logging

from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from notice_bus.settings import Settings

log = logging.getLogger("notice_bus.retry")


def is_retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False))


def retrying(settings: Settings) -> Retrying:
    """Exponential backoff with jitter, limits from ``settings``; re-raises the last error."""
    return Retrying(
        retry=retry_if_exception(is_retriable),
        stop=stop_after_attempt(settings.retry_attempts),
        wait=wait_exponential_jitter(
            multiplier=settings.retry_initial_s,
            max=settings.retry_max_s,
            jitter=settings.retry_initial_s,
        ),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )

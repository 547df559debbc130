"""What is retried and when: tenacity's exponential backoff with jitter, ``Retry-After``
honoured (seconds or HTTP date, capped), bounded by attempts and total time; a request
that changes something is resent only when the server certainly did nothing."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from tenacity import (
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from ..errors import APIError, MalformedResponseError, NetworkError, RateLimitedError
from ..formats import http_date

__all__ = ["RetryPlan", "RetryPolicy", "UnsentError", "is_transient", "parse_retry_after"]

log = logging.getLogger("mh_notebook.client")

_RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long a request rides out transient failures before it gives up.

    The defaults ride out about 30 seconds of trouble. ``max_attempts=1`` disables retries.
    """

    max_attempts: int = 10
    """Attempts in all, the first included."""
    max_time: float = 30.0
    """Seconds from the first attempt after which no new attempt starts."""
    initial_backoff: float = 0.5
    """First backoff in seconds; doubles each attempt (plus jitter)."""
    max_backoff: float = 8.0
    """Longest backoff between two attempts."""
    max_retry_after: float = 60.0
    """Cap on a server's ``Retry-After``."""


class UnsentError(NetworkError):
    """The connection failed before the request was sent: resending is safe."""


def parse_retry_after(
    value: str | None, cap: float, now: float | None = None, date: str | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped.

    An HTTP date is a time on the server's clock: it is read against the same answer's
    ``Date`` header (``date``) when there is one, else against ``now`` (this machine's
    clock), which is off by however far the two clocks are apart."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        when = http_date(value)
        if when is None:
            return None
        reference = http_date(date)
        seconds = when - (reference if reference is not None else time.time() if now is None else now)
    return max(0.0, min(seconds, cap)) if seconds == seconds else None  # NaN: no wait said


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: network errors, 429, 502/503/504, non-JSON bodies."""
    if isinstance(exc, NetworkError):
        return True
    if isinstance(exc, APIError):
        return exc.status_code in _RETRY_STATUSES
    return isinstance(exc, MalformedResponseError) and exc.field == "<body>"


def _resend_safe(exc: BaseException) -> bool:
    """For creations: only when the server certainly did nothing (not sent, or 429)."""
    return isinstance(exc, UnsentError | RateLimitedError)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info("attempt %d failed (%s); retrying in %.2f s", state.attempt_number, exc, wait)


class RetryPlan:
    """A :class:`RetryPolicy` as tenacity's arguments, for ``Retrying`` and ``AsyncRetrying`` alike."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._backoff = wait_exponential_jitter(
            multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.initial_backoff
        )

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: ``Retry-After`` if sent, else backoff."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, APIError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    def kwargs(self, retry: bool, *, resend: bool = True) -> dict[str, Any]:
        """tenacity's arguments: one attempt unless ``retry``; a request that must not be
        resent blindly (``resend=False``) is retried only when it certainly did nothing."""
        attempts = self.policy.max_attempts if retry else 1
        return {
            "retry": retry_if_exception(is_transient if resend else _resend_safe),
            "wait": self.wait,
            "stop": stop_after_attempt(attempts) | stop_before_delay(self.policy.max_time),
            "reraise": True,
            "before_sleep": _log_retry,
        }

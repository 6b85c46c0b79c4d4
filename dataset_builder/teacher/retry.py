"""When to try again: error classes, transient versus fatal errors, the server's Retry-After, and the
retry policy. Retries live here, in one place, and the SDK's own retries are off: the SDK cannot retry
replies it accepts but the teacher cannot use, and a budget cap must see every attempt."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import openai

from .credentials import redact_api_key
from .limits import deadline_passed

logger = logging.getLogger(__name__)

# A worker waits no longer than this for a Retry-After: a server asking for hours (86400 s has been seen)
# would otherwise park the run for that long; the attempt fails instead and a rerun asks again.
MAX_RETRY_AFTER_S = 120.0


class FatalTeacherError(RuntimeError):
    """The teacher cannot answer anything (bad key, unknown model, unsupported parameter, no quota)."""


class BudgetExhausted(RuntimeError):
    """The next attempt could push the spend past --max-usd."""


class RetryAfterTooLong(RuntimeError):
    """The server asked for a longer wait than `MAX_RETRY_AFTER_S`."""


# Errors that would repeat for every request: stop the run instead of failing every record.
FATAL_ERROR_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "model_not_found", "unsupported_parameter", "unsupported_value"}
)


def is_fatal(error: openai.APIStatusError) -> bool:
    fatal_types = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
    return isinstance(error, fatal_types) or error.code in FATAL_ERROR_CODES


def is_transient_status(status_code: int) -> bool:
    return status_code in (408, 409, 429) or status_code >= 500


def is_transient(error: openai.APIConnectionError | openai.APIStatusError) -> bool:
    if isinstance(error, openai.APIConnectionError):
        return True
    return is_transient_status(error.status_code) and not is_fatal(error)


def retry_after_seconds(headers: Any) -> float | None:
    """The server's requested wait: `retry-after-ms`, else `Retry-After` in seconds or as an HTTP date."""
    for name, seconds_per_unit in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * seconds_per_unit
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def capped_retry_after(error: Exception) -> float | None:
    """The error's Retry-After, or `RetryAfterTooLong` when it is over `MAX_RETRY_AFTER_S`."""
    if not isinstance(error, openai.APIStatusError):
        return None
    seconds = retry_after_seconds(error.response.headers)
    if seconds is not None and seconds > MAX_RETRY_AFTER_S:
        raise RetryAfterTooLong(f"{describe_error(error)}: {too_long_wait_message(seconds)}") from None
    return seconds


def too_long_wait_message(seconds: float) -> str:
    return (
        f"the server asked to wait {seconds:,.0f} s before retrying (Retry-After), longer than the "
        f"{MAX_RETRY_AFTER_S:.0f} s a worker waits; rerun the command later"
    )


def describe_error(error: BaseException) -> str:
    if isinstance(error, openai.APITimeoutError):
        passed = deadline_passed(error)
        return f"the request timed out: {passed}" if passed else "the request timed out"
    if isinstance(error, openai.APIConnectionError):
        return redact_api_key(f"connection error ({error.__cause__ or error})")
    if isinstance(error, openai.APIStatusError):
        body_message = error.body.get("message") if isinstance(error.body, dict) else None
        code = f" {error.code}" if error.code else ""
        return redact_api_key(f"HTTP {error.status_code}{code}: {body_message or error.message}")
    return redact_api_key(str(error))


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for 429/5xx/timeouts/dropped connections and unusable replies: more patient than the SDK's 2."""

    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Wait before attempt `attempt + 1`: what the server asked for, else exponential backoff with jitter."""
        if retry_after_s is not None:
            return retry_after_s * random.uniform(1.0, 1.1)  # a little late, so waiting workers do not return at once
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


T = TypeVar("T")


def call_with_retries(call: Callable[[], T], retry: RetryPolicy) -> T:
    """For idempotent management calls (uploads, batch look-ups, downloads)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except (openai.APIConnectionError, openai.APIStatusError) as error:
            if not is_transient(error) or attempt >= retry.max_attempts:
                raise
            delay = retry.delay_s(attempt, capped_retry_after(error))
            logger.info("%s; retrying in %.1f s", describe_error(error), delay)
            time.sleep(delay)

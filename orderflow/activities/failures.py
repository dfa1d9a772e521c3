"""How an adapter's failure reaches Temporal: permanent parks the saga, transient is retried.

- A `PermanentError` becomes a non-retryable `ApplicationError` whose type is the error's class
  name, so the saga sees at once why it must park (`ValidationRejectedError`, `ConflictError`...).
- A `RateLimitedError` stays retryable and carries the vendor's requested wait as
  `next_retry_delay`, so Temporal's next attempt honours `Retry-After`.
- Any other `TransientError` stays retryable, on the workflow's retry policy.

Details carry the system, the vendor's code and the HTTP status, what an operator searches the
vendor's documentation for; never the request or the response body, which may hold personal data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from temporalio.exceptions import ApplicationError

from orderflow.adapters.errors import AdapterError, PermanentError, RateLimitedError


def failure_details(error: AdapterError) -> dict[str, Any]:
    """The facts about a failure an operator needs: which system, its code, the HTTP status."""
    return {"system": error.system, "vendor_code": error.vendor_code, "status_code": error.status_code}


def to_application_error(error: AdapterError) -> ApplicationError:
    """An adapter's error as the `ApplicationError` Temporal records and retries (or not)."""
    message = str(error)
    if isinstance(error, PermanentError):
        return ApplicationError(message, failure_details(error), type=error.error_type, non_retryable=True)
    delay: timedelta | None = None
    if isinstance(error, RateLimitedError) and error.retry_after is not None:
        delay = timedelta(seconds=error.retry_after)
    return ApplicationError(message, failure_details(error), type=error.error_type, next_retry_delay=delay)


@contextmanager
def translated_failures() -> Iterator[None]:
    """Run an activity's adapter calls, raising their failures in Temporal's terms."""
    try:
        yield
    except AdapterError as error:
        raise to_application_error(error) from error

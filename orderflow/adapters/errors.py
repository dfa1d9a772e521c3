"""How adapters report failure: transient (try again) or permanent (a person must act).

Activities turn a `PermanentError` into a non-retryable `ApplicationError`, which parks the saga
for an operator, and let a `TransientError` through for Temporal to retry with backoff. A
`RateLimitedError` carries the delay the vendor asked for, so the retry honours `Retry-After`.
Every error keeps the vendor's own code and message, because that is what an operator searches
the vendor's documentation for.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class AdapterError(Exception):
    """A call to an external system failed; `system` says which, `vendor_code` says how."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        system: str,
        status_code: int | None = None,
        vendor_code: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.system = system
        self.status_code = status_code
        self.vendor_code = vendor_code
        self.details = details

    def __str__(self) -> str:
        where = f"{self.system}"
        if self.status_code is not None:
            where += f" HTTP {self.status_code}"
        if self.vendor_code:
            where += f" {self.vendor_code}"
        return f"{where}: {self.message}"

    @property
    def error_type(self) -> str:
        """The name Temporal records as the failure's type."""
        return type(self).__name__


class TransientError(AdapterError):
    """The system may accept the same call later: a 5xx, a timeout, a dropped connection."""

    retryable = True


class RateLimitedError(TransientError):
    """The system throttled us; `retry_after` is how long it asked us to wait, in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class PermanentError(AdapterError):
    """Repeating the same call cannot succeed; the data or the configuration must change first."""


class AuthenticationError(PermanentError):
    """The system refused our credentials."""


class NotFoundError(PermanentError):
    """The record we named does not exist in the system."""


class ValidationRejectedError(PermanentError):
    """The system rejected the payload: an unknown SKU, a bad address, a missing field."""


class ConflictError(PermanentError):
    """The call clashes with the record's state: a duplicate, or a step that is no longer allowed."""


def retry_after_seconds(headers: Mapping[str, str], *names: str) -> float | None:
    """Read a server's requested delay from the first header present (seconds or an HTTP date)."""
    for name in names or ("retry-after",):
        raw = headers.get(name)
        if raw is None:
            continue
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            continue
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def classify_status(
    status_code: int,
    message: str,
    *,
    system: str,
    vendor_code: str | None = None,
    details: Any = None,
    retry_after: float | None = None,
) -> AdapterError:
    """The error class for an HTTP status, when the vendor's body says nothing more specific."""
    kwargs: dict[str, Any] = {
        "system": system,
        "status_code": status_code,
        "vendor_code": vendor_code,
        "details": details,
    }
    if status_code == 429:
        return RateLimitedError(message, retry_after=retry_after, **kwargs)
    if status_code in (408, 425) or status_code >= 500:
        return TransientError(message, **kwargs)
    if status_code in (401, 403):
        return AuthenticationError(message, **kwargs)
    if status_code == 404:
        return NotFoundError(message, **kwargs)
    if status_code == 409:
        return ConflictError(message, **kwargs)
    if status_code in (400, 422):
        return ValidationRejectedError(message, **kwargs)
    return PermanentError(message, **kwargs)


def transport_error(exc: httpx.TransportError, *, system: str) -> TransientError:
    """A network failure (timeout, reset, refused) as a transient error: the call may have landed."""
    kind = type(exc).__name__
    return TransientError(f"{kind}: {exc or 'no response'}", system=system, vendor_code=kind)

"""How adapter failures become Temporal failures: permanent parks, throttles carry their wait."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError

from orderflow.activities.failures import to_application_error, translated_failures
from orderflow.adapters.errors import (
    AuthenticationError,
    ConflictError,
    RateLimitedError,
    TransientError,
    ValidationRejectedError,
)


def test_a_permanent_error_is_non_retryable_with_its_class_and_vendor_facts() -> None:
    error = ValidationRejectedError("unknown SKU ZZ-1", system="netsuite", status_code=400, vendor_code="INVALID_KEY")

    failure = to_application_error(error)

    assert failure.non_retryable
    assert failure.type == "ValidationRejectedError"
    assert failure.message == "netsuite HTTP 400 INVALID_KEY: unknown SKU ZZ-1"
    assert list(failure.details) == [{"system": "netsuite", "vendor_code": "INVALID_KEY", "status_code": 400}]


@pytest.mark.parametrize("error_class", [AuthenticationError, ConflictError])
def test_every_permanent_subclass_parks(error_class: type[ValidationRejectedError]) -> None:
    failure = to_application_error(error_class("no", system="wms", status_code=409))

    assert failure.non_retryable and failure.type == error_class.__name__


def test_a_throttle_stays_retryable_and_asks_temporal_to_wait_as_the_vendor_said() -> None:
    failure = to_application_error(RateLimitedError("slow down", system="wms", status_code=429, retry_after=42.5))

    assert not failure.non_retryable
    assert failure.type == "RateLimitedError"
    assert failure.next_retry_delay == timedelta(seconds=42.5)


def test_a_throttle_without_a_wait_leaves_the_delay_to_the_retry_policy() -> None:
    failure = to_application_error(RateLimitedError("slow down", system="carrier", status_code=429))

    assert not failure.non_retryable and failure.next_retry_delay is None


def test_an_outage_stays_retryable() -> None:
    failure = to_application_error(TransientError("bad gateway", system="netsuite", status_code=502))

    assert not failure.non_retryable and failure.type == "TransientError" and failure.next_retry_delay is None


def test_the_context_translates_adapter_errors_and_lets_everything_else_through() -> None:
    with pytest.raises(ApplicationError) as caught, translated_failures():
        raise ConflictError("refund rejected", system="carrier", vendor_code="SHIPMENT.REFUND.REJECTED")
    assert caught.value.non_retryable
    assert isinstance(caught.value.__cause__, ConflictError)

    with pytest.raises(KeyError), translated_failures():
        raise KeyError("a bug is not a vendor failure")

"""The carrier adapter: EasyPost v2 (REST, JSON) for rate shopping, labels, refunds and tracking.

EasyPost has no idempotency key, so every write here is made safe to repeat by reading first:

- a shipment is looked up by its `reference` (the saga's idempotency key) among recent shipments
  before a new one is created, so a create whose response was lost is reused, not duplicated;
- a label buy reads the shipment first and returns the label already on it; a 422 on buy is read
  back too, because it may be the answer to a buy that landed on an earlier attempt;
- a refund that is already submitted or refunded counts as done.

Webhooks are Event objects signed `X-Hmac-Signature: hmac-sha256-hex=<hex>` with the NFKD form of
the webhook secret; `verify_webhook` checks that over the raw body, `tracker_from_event` maps one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from orderflow.adapters.errors import (
    AdapterError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    ValidationRejectedError,
    classify_status,
    retry_after_seconds,
    transport_error,
)
from orderflow.canonical import (
    Address,
    Label,
    Money,
    Parcel,
    Rate,
    RefundStatus,
    ShipmentQuote,
    Tracker,
    TrackingStatus,
)
from orderflow.settings import CarrierSettings

log = logging.getLogger("orderflow.adapters.carrier")

SYSTEM = "carrier"
SIGNATURE_PREFIX = "hmac-sha256-hex="

# How far back a retried create looks for the shipment its earlier attempt may have made. Temporal
# retries a failed activity within minutes to hours, so a day covers every retry of one step.
REFERENCE_LOOKBACK = timedelta(hours=24)
LOOKUP_PAGE_SIZE = 100
MAX_LOOKUP_PAGES = 10

# EasyPost sends no Retry-After: it asks for exponential backoff with jitter. Waits that fit under
# `settings.max_throttle_wait_seconds` happen inside the call; beyond that Temporal's retry takes over.
THROTTLE_BACKOFF_SECONDS = (0.25, 0.5, 1.0, 2.0)
RETRY_AFTER_HINT_SECONDS = 5.0

_LABEL_STATES_DONE = {"submitted", "refunded"}


class CarrierClient:
    """EasyPost-shaped carrier API: shipments and rates, labels, refunds and trackers, in canonical terms."""

    def __init__(self, http: httpx.AsyncClient, settings: CarrierSettings) -> None:
        self.http = http
        self.settings = settings
        self._base = settings.base_url.rstrip("/")

    # -- shipments and labels -------------------------------------------------------------------

    async def create_shipment(
        self,
        *,
        reference: str,
        ship_from: Address,
        ship_to: Address,
        parcel: Parcel,
        is_return: bool = False,
    ) -> ShipmentQuote:
        """Rate a parcel, reusing the shipment an earlier attempt made for the same reference.

        For a return pass the outbound addresses (from the warehouse, to the customer) with
        `is_return=True`: the carrier swaps them so the label brings the parcel back.
        """
        shipment = await self._find_or_create(reference, ship_from, ship_to, parcel, is_return)
        return quote_from_shipment(shipment)

    async def find_label(self, reference: str, *, is_return: bool = False) -> Label | None:
        """The label bought for a reference recently, if any: what a compensation needs to void it."""
        shipment = await self._find_by_reference(reference, is_return)
        if shipment is None or not shipment.get("postage_label"):
            return None
        return label_from_shipment(shipment)

    async def buy_label(self, carrier_shipment_id: str, rate_id: str) -> Label:
        """Buy a rate of a shipment, or return the label the shipment already has (no second buy)."""
        current = await self._get_shipment(carrier_shipment_id)
        if current.get("postage_label"):
            return label_from_shipment(current)
        try:
            bought = await self._request(
                "POST", f"/v2/shipments/{carrier_shipment_id}/buy", json={"rate": {"id": rate_id}}
            )
        except PermanentError as exc:
            if exc.status_code != 422:
                raise
            # A 422 may mean a buy from an earlier, lost attempt already landed: the label on the
            # shipment is then the answer, whatever the error's exact code.
            again = await self._get_shipment(carrier_shipment_id)
            if again.get("postage_label"):
                return label_from_shipment(again)
            raise
        return label_from_shipment(bought)

    async def purchase_label(
        self,
        *,
        reference: str,
        ship_from: Address,
        ship_to: Address,
        parcel: Parcel,
        is_return: bool = False,
        max_delivery_days: int | None = None,
        carriers: list[str] | None = None,
    ) -> Label:
        """Rate-shop and buy the cheapest eligible rate; repeated calls for one reference give one label."""
        shipment = await self._find_or_create(reference, ship_from, ship_to, parcel, is_return)
        if shipment.get("postage_label"):
            return label_from_shipment(shipment)
        rate = cheapest_rate(shipment.get("rates") or [], max_delivery_days=max_delivery_days, carriers=carriers)
        if rate is None:
            raise ValidationRejectedError(
                f"no rate for shipment {shipment['id']} meets carriers={carriers} "
                f"max_delivery_days={max_delivery_days}",
                system=SYSTEM,
                details={"rates": [_rate_summary(r) for r in shipment.get("rates") or []]},
            )
        return await self.buy_label(shipment["id"], rate["id"])

    async def get_label(self, carrier_shipment_id: str) -> Label:
        """The label bought on a shipment, with its current refund status."""
        shipment = await self._get_shipment(carrier_shipment_id)
        if not shipment.get("postage_label"):
            raise NotFoundError(f"shipment {carrier_shipment_id} has no label", system=SYSTEM)
        return label_from_shipment(shipment)

    async def refund_label(self, carrier_shipment_id: str) -> Label:
        """Void a label: a refund already submitted or refunded is success; a rejected one is a conflict."""
        shipment = await self._get_shipment(carrier_shipment_id)
        if not shipment.get("postage_label"):
            raise NotFoundError(f"shipment {carrier_shipment_id} has no label to refund", system=SYSTEM)
        if shipment.get("refund_status") in _LABEL_STATES_DONE:
            return label_from_shipment(shipment)
        if shipment.get("refund_status") == "rejected":
            raise _refund_rejected(carrier_shipment_id)
        try:
            refunded = await self._request("POST", f"/v2/shipments/{carrier_shipment_id}/refund")
        except PermanentError as exc:
            if exc.status_code != 422:
                raise
            again = await self._get_shipment(carrier_shipment_id)
            if again.get("refund_status") in _LABEL_STATES_DONE:
                return label_from_shipment(again)
            raise
        if refunded.get("refund_status") == "rejected":
            raise _refund_rejected(carrier_shipment_id)
        return label_from_shipment(refunded)

    # -- trackers -------------------------------------------------------------------------------

    async def create_tracker(self, tracking_number: str, carrier: str | None = None) -> Tracker:
        """Follow a tracking number (the carrier is detected when not given)."""
        tracker: dict[str, Any] = {"tracking_code": tracking_number}
        if carrier:
            tracker["carrier"] = carrier
        return tracker_from_easypost(await self._request("POST", "/v2/trackers", json={"tracker": tracker}))

    async def get_tracker(self, tracker_id: str) -> Tracker:
        """A tracker's current status."""
        return tracker_from_easypost(await self._request("GET", f"/v2/trackers/{tracker_id}"))

    # -- internals ------------------------------------------------------------------------------

    async def _get_shipment(self, shipment_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v2/shipments/{shipment_id}")

    async def _find_or_create(
        self, reference: str, ship_from: Address, ship_to: Address, parcel: Parcel, is_return: bool
    ) -> dict[str, Any]:
        existing = await self._find_by_reference(reference, is_return)
        if existing is not None:
            return existing
        payload = {
            "shipment": {
                "reference": reference,
                "from_address": address_to_easypost(ship_from),
                "to_address": address_to_easypost(ship_to),
                "parcel": parcel_to_easypost(parcel),
                "is_return": is_return,
                "options": {"label_format": "PDF"},
            }
        }
        return await self._request("POST", "/v2/shipments", json=payload)

    async def _find_by_reference(self, reference: str, is_return: bool) -> dict[str, Any] | None:
        """A recent shipment with this reference: a bought one first, else the oldest."""
        since = (datetime.now(UTC) - REFERENCE_LOOKBACK).strftime("%Y-%m-%dT%H:%M:%SZ")
        # No `purchased` filter: unbought shipments matter too, and the API's default is not relied on.
        params: dict[str, Any] = {"start_datetime": since, "page_size": LOOKUP_PAGE_SIZE}
        matches: list[dict[str, Any]] = []
        for _ in range(MAX_LOOKUP_PAGES):
            page = await self._request("GET", "/v2/shipments", params=params)
            shipments: list[dict[str, Any]] = page.get("shipments") or []
            matches += [
                s for s in shipments if s.get("reference") == reference and bool(s.get("is_return")) == is_return
            ]
            if not page.get("has_more") or not shipments:
                break
            params = {**params, "before_id": shipments[-1]["id"]}
        if not matches:
            return None
        bought = [s for s in matches if s.get("postage_label")]
        # Newest first from the API, so the last match is the oldest.
        return bought[0] if bought else matches[-1]

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        waited = 0.0
        for attempt in range(len(THROTTLE_BACKOFF_SECONDS) + 1):
            try:
                response = await self.http.request(
                    method,
                    f"{self._base}{path}",
                    json=json,
                    params=params,
                    # EasyPost's documented scheme: the key as Basic username, empty password.
                    auth=httpx.BasicAuth(self.settings.api_key.get_secret_value(), ""),
                    headers={"Accept": "application/json"},
                    timeout=self.settings.timeout_seconds,
                )
            except httpx.TransportError as exc:
                raise transport_error(exc, system=SYSTEM) from exc
            if response.status_code < 400:
                body = response.json()
                return body if isinstance(body, dict) else {"data": body}
            error = error_from_response(response)
            if not isinstance(error, RateLimitedError) or attempt >= len(THROTTLE_BACKOFF_SECONDS):
                raise error
            # A 429 means the call was not processed, so repeating it (even a buy) is safe.
            if error.retry_after is not None:
                delay = error.retry_after
            else:
                delay = THROTTLE_BACKOFF_SECONDS[attempt] * (0.5 + random.random() / 2)
            if waited + delay > self.settings.max_throttle_wait_seconds:
                raise error
            log.info("carrier throttled %s %s; retrying in %.2fs", method, path, delay)
            await asyncio.sleep(delay)
            waited += delay
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


# -- errors ------------------------------------------------------------------------------------


def error_from_response(response: httpx.Response) -> AdapterError:
    """An EasyPost error answer as a typed error keeping its code, message and field errors."""
    code: str | None = None
    message = response.reason_phrase or f"HTTP {response.status_code}"
    field_errors: list[Any] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    envelope = body.get("error") if isinstance(body, dict) else None
    if isinstance(envelope, dict):
        code = envelope.get("code") or None
        message = envelope.get("message") or message
        raw_errors = envelope.get("errors") or []
        # EasyPost documents `errors` as FieldError objects or plain strings.
        field_errors = [e if isinstance(e, dict | str) else str(e) for e in raw_errors]
    details = {"errors": field_errors, "request_id": response.headers.get("x-ep-request-uuid")}
    kwargs: dict[str, Any] = {
        "system": SYSTEM,
        "status_code": response.status_code,
        "vendor_code": code,
        "details": details,
    }
    if response.status_code == 422 and code and "ADDRESS." in code:
        return ValidationRejectedError(message, **kwargs)
    if response.status_code == 429:
        retry_after = retry_after_seconds(response.headers)
        return RateLimitedError(message, retry_after=retry_after, **kwargs)
    return classify_status(response.status_code, message, system=SYSTEM, vendor_code=code, details=details)


def _refund_rejected(shipment_id: str) -> ConflictError:
    return ConflictError(
        f"the carrier rejected the refund of shipment {shipment_id}: the label was already scanned",
        system=SYSTEM,
        vendor_code="rejected",
        details={"refund_status": "rejected"},
    )


# -- mapping -----------------------------------------------------------------------------------


def address_to_easypost(address: Address) -> dict[str, Any]:
    """A canonical address in EasyPost's Address fields."""
    fields = {
        "name": address.name,
        "company": address.company,
        "street1": address.line1,
        "street2": address.line2,
        "city": address.city,
        "state": address.region,
        "zip": address.postal_code,
        "country": address.country,
        "phone": address.phone,
        "email": address.email,
    }
    return {key: value for key, value in fields.items() if value is not None}


def parcel_to_easypost(parcel: Parcel) -> dict[str, Any]:
    """A canonical parcel in EasyPost's units: inches and ounces."""
    return {
        "length": float(parcel.length_in),
        "width": float(parcel.width_in),
        "height": float(parcel.height_in),
        "weight": float(parcel.weight_oz),
    }


def rate_from_easypost(raw: dict[str, Any]) -> Rate:
    """An EasyPost Rate (amounts are strings) as a canonical rate."""
    days = raw.get("delivery_days")
    if days is None:
        days = raw.get("est_delivery_days")
    return Rate(
        rate_id=raw["id"],
        carrier=raw["carrier"],
        service=raw["service"],
        amount=Money.of(str(raw["rate"]), raw.get("currency") or "USD"),
        delivery_days=days,
    )


def _rate_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: raw.get(k) for k in ("id", "carrier", "service", "rate", "delivery_days")}


def cheapest_rate(
    rates: list[dict[str, Any]],
    *,
    max_delivery_days: int | None = None,
    carriers: list[str] | None = None,
) -> dict[str, Any] | None:
    """The cheapest rate among those from the allowed carriers that arrive in time (ties: faster first)."""
    allowed = {c.lower() for c in carriers} if carriers else None

    def eligible(rate: dict[str, Any]) -> bool:
        if allowed is not None and str(rate.get("carrier", "")).lower() not in allowed:
            return False
        if max_delivery_days is not None:
            days = rate.get("delivery_days") or rate.get("est_delivery_days")
            return days is not None and int(days) <= max_delivery_days
        return True

    def price(rate: dict[str, Any]) -> tuple[Decimal, int, str, str]:
        try:
            amount = Decimal(str(rate.get("rate")))
        except InvalidOperation:
            amount = Decimal("Infinity")
        days = rate.get("delivery_days") or 99
        return amount, int(days), str(rate.get("carrier")), str(rate.get("service"))

    candidates = [r for r in rates if eligible(r)]
    return min(candidates, key=price) if candidates else None


def quote_from_shipment(raw: dict[str, Any]) -> ShipmentQuote:
    """An EasyPost Shipment, rated but not bought, as a canonical quote."""
    return ShipmentQuote(
        carrier_shipment_id=raw["id"],
        reference=raw.get("reference"),
        rates=[rate_from_easypost(r) for r in raw.get("rates") or []],
        is_return=bool(raw.get("is_return")),
    )


def _refund_status(raw: Any) -> RefundStatus:
    if not raw:
        return RefundStatus.NONE
    try:
        return RefundStatus(raw)
    except ValueError:
        return RefundStatus.NONE


def label_from_shipment(raw: dict[str, Any]) -> Label:
    """A bought EasyPost Shipment as a canonical label: rate, tracking, label file, refund status."""
    postage = raw.get("postage_label")
    rate = raw.get("selected_rate")
    if not postage or not rate:
        raise ValueError(f"shipment {raw.get('id')} has no label")
    tracker = raw.get("tracker") or {}
    return Label(
        carrier_shipment_id=raw["id"],
        reference=raw.get("reference"),
        rate=rate_from_easypost(rate),
        tracking_number=raw["tracking_code"],
        label_url=postage["label_url"],
        tracker_id=tracker.get("id"),
        tracking_url=tracker.get("public_url"),
        is_return=bool(raw.get("is_return")),
        refund_status=_refund_status(raw.get("refund_status")),
    )


def _tracking_status(raw: Any) -> TrackingStatus:
    try:
        return TrackingStatus(raw)
    except ValueError:
        return TrackingStatus.UNKNOWN


def _timestamp(raw: Any) -> datetime | None:
    if not raw:
        return None
    parsed = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def tracker_from_easypost(raw: dict[str, Any]) -> Tracker:
    """An EasyPost Tracker as a canonical tracker."""
    return Tracker(
        tracker_id=raw["id"],
        tracking_number=raw["tracking_code"],
        carrier=raw.get("carrier") or "unknown",
        status=_tracking_status(raw.get("status")),
        public_url=raw.get("public_url"),
        carrier_shipment_id=raw.get("shipment_id"),
        signed_by=raw.get("signed_by"),
        updated_at=_timestamp(raw.get("updated_at")),
    )


def tracker_from_event(event: dict[str, Any]) -> Tracker:
    """The tracker carried by a `tracker.created` or `tracker.updated` Event."""
    result = event.get("result")
    if not isinstance(result, dict) or result.get("object") != "Tracker":
        raise ValueError(f"event {event.get('id')} ({event.get('description')}) does not carry a Tracker")
    return tracker_from_easypost(result)


def verify_webhook(raw_body: bytes, signature_header: str | None, secret: str) -> bool:
    """Whether an Event was signed with our webhook secret (HMAC-SHA256 hex, NFKD key, constant time)."""
    if not signature_header or not secret:
        return False
    key = unicodedata.normalize("NFKD", secret).encode("utf-8")
    expected = SIGNATURE_PREFIX + hmac.new(key, raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature_header.strip().encode())

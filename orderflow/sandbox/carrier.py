"""The carrier simulator: an EasyPost-shaped REST v2 API for rating, buying, refunding and tracking labels.

What it models, and why:

- Authentication is the API key as the Basic username (empty password) or as a Bearer token. The
  key's prefix decides the mode: `EZTK...` is a test key, `EZAK...` a production key.
- `POST /v2/shipments` rates a parcel with 2-4 deterministic rates (weight and the distance between
  ZIP prefixes). `buy` has no idempotency key, exactly like EasyPost, so a client that lost a buy
  response must read the shipment back; a second buy is refused with a 422.
- Trackers move `pre_transit -> in_transit -> out_for_delivery -> delivered` on the sandbox clock,
  stopping at the fixed final status of the EasyPost test codes `EZ1000000001..EZ7000000007`.
- Refunds are `submitted` at once and settle later: `refunded` if the parcel was never scanned,
  `rejected` otherwise.
- Returns (`is_return: true`): the outbound addresses are swapped, and the label's tracker waits at
  `unknown` until the customer ships, so an unused return label can always be voided.
- Webhooks are Event objects signed `X-Hmac-Signature: hmac-sha256-hex=<hex>` with the NFKD form of
  the subscription's secret, retried for about a day (compressed) and disabled when exhausted.
- Index (list) endpoints are limited to 5 requests a second, as EasyPost documents.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import math
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from orderflow.sandbox.core import SandboxContext, Simulator
from orderflow.sandbox.faults import FaultKind, FaultRule
from orderflow.sandbox.outbox import Delivery, DeliveryStatus, Subscription, SystemWebhookPolicy

# EasyPost retries a failing webhook with progressive backoff for about 24 hours. The exact steps
# are not published; these add up to just under a day (real seconds, compressed by the outbox).
WEBHOOK_RETRY_SCHEDULE = [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0]
# Third-party guides say an endpoint must answer within about 7 s (unverified).
WEBHOOK_TIMEOUT_SECONDS = 7.0
DEFAULT_TRACKER_STEP_SECONDS = 60.0
REFUND_SETTLE_SECONDS = 30.0
INDEX_REQUESTS_PER_SECOND = 5
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

# The EasyPost test tracking codes, each with the status its tracker ends in.
TEST_TRACKING_CODES: dict[str, str] = {
    "EZ1000000001": "pre_transit",
    "EZ2000000002": "in_transit",
    "EZ3000000003": "out_for_delivery",
    "EZ4000000004": "delivered",
    "EZ5000000005": "return_to_sender",
    "EZ6000000006": "failure",
    "EZ7000000007": "unknown",
}
# Which test code a bought label gets: mostly one that ends delivered, some carrier exceptions.
_BOUGHT_LABEL_CODES = (("EZ4000000004", 0.9), ("EZ5000000005", 0.05), ("EZ6000000006", 0.05))

# The statuses a tracker walks through on its way to each final status.
_PATHS: dict[str, list[str]] = {
    "unknown": ["unknown"],
    "pre_transit": ["pre_transit"],
    "in_transit": ["pre_transit", "in_transit"],
    "out_for_delivery": ["pre_transit", "in_transit", "out_for_delivery"],
    "delivered": ["pre_transit", "in_transit", "out_for_delivery", "delivered"],
    "return_to_sender": ["pre_transit", "in_transit", "return_to_sender"],
    "failure": ["pre_transit", "in_transit", "failure"],
}
_SCAN_MESSAGES: dict[str, tuple[str, str]] = {
    "unknown": ("Label created, awaiting carrier information", "unknown"),
    "pre_transit": ("Pre-Shipment Info Sent to Carrier", "status_update"),
    "in_transit": ("Arrived at Carrier Facility", "arrived_at_facility"),
    "out_for_delivery": ("Out for Delivery", "out_for_delivery"),
    "delivered": ("Delivered", "arrived_at_destination"),
    "return_to_sender": ("Returned to Sender", "return"),
    "failure": ("Delivery Attempt Failed", "delivery_exception"),
}
# A refund is refused once the carrier has scanned the parcel.
_UNSCANNED = {"unknown", "pre_transit"}


@dataclass(frozen=True)
class _Service:
    carrier: str
    service: str
    base: Decimal
    per_pound: Decimal
    days: Callable[[int], int]
    max_pounds: int


_SERVICES = (
    _Service("USPS", "GroundAdvantage", Decimal("5.10"), Decimal("0.62"), lambda zone: min(5, 2 + zone // 2), 15),
    _Service("USPS", "Priority", Decimal("8.20"), Decimal("0.95"), lambda zone: 1 + zone // 3, 70),
    _Service("UPS", "Ground", Decimal("9.45"), Decimal("0.58"), lambda zone: 1 + zone // 2, 150),
    _Service("FedEx", "FEDEX_2_DAY", Decimal("17.80"), Decimal("1.35"), lambda _zone: 2, 150),
)
_CARRIER_ACCOUNTS = {
    "USPS": "ca_usps0000000000000000000000000001",
    "UPS": "ca_ups00000000000000000000000000002",
    "FedEx": "ca_fedex000000000000000000000000003",
}

# A one-page PDF that says "sandbox label": enough for a viewer to open, small enough to serve inline.
_PDF_LABEL = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 288 432]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


class EasyPostError(Exception):
    """An answer in EasyPost's error envelope: `{"error": {code, message, errors[]}}`."""

    def __init__(self, status: int, code: str, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []

    def envelope(self) -> dict[str, Any]:
        """The body EasyPost sends with this error."""
        return {"error": {"code": self.code, "message": self.message, "errors": self.errors}}


def _not_found() -> EasyPostError:
    return EasyPostError(404, "NOT_FOUND", "The requested resource could not be found.")


def _required(field_name: str) -> EasyPostError:
    return EasyPostError(
        422, "PARAMETER.REQUIRED", "Missing required parameter.", [{"field": field_name, "message": "cannot be blank"}]
    )


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts_ms(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _parse_when(raw: str, name: str) -> datetime:
    text = raw.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise EasyPostError(
            422, "PARAMETER.INVALID", "Invalid parameter.", [{"field": name, "message": "is not a valid datetime"}]
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _zip3(address: dict[str, Any]) -> int | None:
    digits = "".join(ch for ch in str(address.get("zip") or "") if ch.isdigit())
    return int(digits[:3]) if len(digits) >= 3 else None


def shipping_zone(from_address: dict[str, Any], to_address: dict[str, Any]) -> int:
    """A postal zone 1-8 from the distance between the two ZIP prefixes (5 when unknown)."""
    origin, destination = _zip3(from_address), _zip3(to_address)
    if origin is None or destination is None:
        return 5
    return 1 + min(7, abs(origin - destination) // 100)


def signature_header(secret: str, raw_body: bytes) -> str:
    """EasyPost's webhook signature: HMAC-SHA256 hex of the raw body, keyed by the NFKD secret."""
    key = unicodedata.normalize("NFKD", secret).encode("utf-8")
    return "hmac-sha256-hex=" + hmac.new(key, raw_body, hashlib.sha256).hexdigest()


@dataclass
class _ShipmentRecord:
    seq: int
    created: datetime
    data: dict[str, Any]


@dataclass
class _TrackerRecord:
    seq: int
    data: dict[str, Any]
    path: list[str]
    step: int
    next_step_at: datetime
    paused: bool = False


@dataclass
class _EventRecord:
    seq: int
    data: dict[str, Any]
    body: str
    result_id: str


@dataclass
class _RefundRecord:
    data: dict[str, Any]
    settle_at: datetime
    settled: bool = False


@dataclass
class _State:
    shipments: dict[str, _ShipmentRecord] = field(default_factory=dict)
    trackers: dict[str, _TrackerRecord] = field(default_factory=dict)
    events: dict[str, _EventRecord] = field(default_factory=dict)
    refunds: dict[str, _RefundRecord] = field(default_factory=dict)
    index_calls: deque[datetime] = field(default_factory=deque)
    seq: int = 0
    requests: int = 0


class CarrierSimulator(Simulator):
    """EasyPost v2 as orderflow uses it: shipments, rates, labels, refunds, trackers, webhooks, events."""

    name = "carrier"

    def __init__(self, ctx: SandboxContext) -> None:
        super().__init__(ctx)
        self.state = _State()
        ctx.outbox.register_system(
            self.name,
            SystemWebhookPolicy(
                retry_schedule=WEBHOOK_RETRY_SCHEDULE,
                timeout_seconds=WEBHOOK_TIMEOUT_SECONDS,
                disable_subscription_when_exhausted=True,
            ),
            self._sign,
        )

    # -- Simulator contract -------------------------------------------------------------------

    def reset(self) -> None:
        """No shipments, trackers, events or refunds; the index limiter forgets its window."""
        self.state = _State()

    def snapshot(self) -> dict[str, Any]:
        """Shipments with their reference, rate, tracking and refund status; trackers; webhooks; events."""
        return {
            "mode": self.mode,
            "shipments": [self._shipment_summary(rec.data) for rec in self.state.shipments.values()],
            "trackers": [
                {
                    "id": rec.data["id"],
                    "tracking_code": rec.data["tracking_code"],
                    "carrier": rec.data["carrier"],
                    "status": rec.data["status"],
                    "final_status": rec.path[-1],
                    "shipment_id": rec.data["shipment_id"],
                    "paused": rec.paused,
                }
                for rec in self.state.trackers.values()
            ],
            "refunds": [copy.deepcopy(rec.data) for rec in self.state.refunds.values()],
            "webhooks": [self._webhook_json(sub) for sub in self._subscriptions()],
            "events": [
                {
                    "id": e["id"],
                    "description": e["description"],
                    "result_id": e["result"]["id"],
                    "status": e["status"],
                    "pending_urls": e["pending_urls"],
                    "completed_urls": e["completed_urls"],
                }
                for e in (self._event_json(rec) for rec in self.state.events.values())
            ],
        }

    def fault_response(self, kind: FaultKind, rule: FaultRule) -> tuple[int, dict[str, str], bytes]:
        """An injected failure in EasyPost's error envelope; EasyPost documents no rate-limit headers."""
        if kind is FaultKind.THROTTLE:
            error = EasyPostError(429, "RATE_LIMITED", "Too many requests; retry with exponential backoff.")
        else:
            codes = {500: "INTERNAL_SERVER_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE.UNAVAILABLE", 504: "TIMEOUT"}
            error = EasyPostError(rule.status, codes.get(rule.status, "INTERNAL_SERVER_ERROR"), "Injected fault.")
        headers = {"content-type": "application/json", "x-ep-request-uuid": self._request_uuid()}
        return error.status, headers, json.dumps(error.envelope()).encode()

    async def tick(self, now: datetime) -> None:
        """Move trackers along their path, settle submitted refunds, stamp exhausted webhooks disabled."""
        for tracker in list(self.state.trackers.values()):
            self._progress(tracker, now)
        for refund in self.state.refunds.values():
            if not refund.settled and refund.settle_at <= now:
                self._settle(refund, now)
        for sub in self._subscriptions():
            if not sub.active and not sub.extra.get("disabled_at"):
                sub.extra["disabled_at"] = _ts(now)

    @property
    def mode(self) -> str:
        """`test` for an EZTK key, `production` otherwise, as EasyPost marks every object."""
        return "test" if self.ctx.config.carrier_api_key.startswith("EZTK") else "production"

    # -- HTTP plumbing --------------------------------------------------------------------------

    def router(self) -> APIRouter:
        """EasyPost's `/v2/...` routes plus the locally served label files and tracking pages."""
        router = APIRouter()
        serve = self._serve

        @router.post("/v2/shipments")
        async def create_shipment(request: Request) -> Response:
            return await serve(request, lambda body: (201, self._create_shipment(body)))

        @router.get("/v2/shipments")
        async def list_shipments(request: Request) -> Response:
            return await serve(request, lambda _b: (200, self._list_shipments(request)), index=True)

        @router.get("/v2/shipments/{shipment_id}")
        async def get_shipment(request: Request, shipment_id: str) -> Response:
            return await serve(request, lambda _b: (200, self._shipment(shipment_id).data))

        @router.post("/v2/shipments/{shipment_id}/rerate")
        async def rerate(request: Request, shipment_id: str) -> Response:
            return await serve(request, lambda _b: (200, self._rerate(shipment_id)))

        @router.post("/v2/shipments/{shipment_id}/buy")
        async def buy(request: Request, shipment_id: str) -> Response:
            return await serve(request, lambda body: (200, self._buy(request, shipment_id, body)))

        @router.get("/v2/shipments/{shipment_id}/label")
        async def convert_label(request: Request, shipment_id: str) -> Response:
            return await serve(request, lambda _b: (200, self._convert_label(request, shipment_id)))

        @router.post("/v2/shipments/{shipment_id}/refund")
        async def refund(request: Request, shipment_id: str) -> Response:
            return await serve(request, lambda _b: (200, self._refund(shipment_id)))

        @router.post("/v2/trackers")
        async def create_tracker(request: Request) -> Response:
            return await serve(request, lambda body: self._create_tracker(request, body))

        @router.get("/v2/trackers")
        async def list_trackers(request: Request) -> Response:
            return await serve(request, lambda _b: (200, self._list_trackers(request)), index=True)

        @router.get("/v2/trackers/{tracker_id}")
        async def get_tracker(request: Request, tracker_id: str) -> Response:
            return await serve(request, lambda _b: (200, self._tracker(tracker_id).data))

        @router.post("/v2/webhooks")
        async def create_webhook(request: Request) -> Response:
            return await serve(request, lambda body: (201, self._create_webhook(body)))

        @router.get("/v2/webhooks")
        async def list_webhooks(request: Request) -> Response:
            return await serve(
                request,
                lambda _b: (200, {"webhooks": [self._webhook_json(s) for s in self._subscriptions()]}),
                index=True,
            )

        @router.get("/v2/webhooks/{webhook_id}")
        async def get_webhook(request: Request, webhook_id: str) -> Response:
            return await serve(request, lambda _b: (200, self._webhook_json(self._subscription(webhook_id))))

        @router.patch("/v2/webhooks/{webhook_id}")
        @router.put("/v2/webhooks/{webhook_id}")
        async def update_webhook(request: Request, webhook_id: str) -> Response:
            return await serve(request, lambda body: (200, self._update_webhook(webhook_id, body)))

        @router.delete("/v2/webhooks/{webhook_id}")
        async def delete_webhook(request: Request, webhook_id: str) -> Response:
            return await serve(request, lambda _b: (200, self._delete_webhook(webhook_id)))

        @router.get("/v2/events")
        async def list_events(request: Request) -> Response:
            return await serve(request, lambda _b: (200, self._list_events(request)), index=True)

        @router.get("/v2/events/{event_id}")
        async def get_event(request: Request, event_id: str) -> Response:
            return await serve(request, lambda _b: (200, self._event_json(self._event(event_id))))

        @router.post("/v2/events")
        async def resend_event(request: Request) -> Response:
            return await serve(request, lambda body: (200, self._resend_event(body)))

        @router.get("/labels/{file_name}")
        async def label_file(file_name: str) -> Response:
            # Like EasyPost's S3 label links: public, no API key needed.
            stem, _, ext = file_name.partition(".")
            rec = self.state.shipments.get(stem)
            if rec is None or not rec.data.get("postage_label"):
                return Response(status_code=404)
            if ext == "zpl":
                code = rec.data["tracking_code"]
                zpl = f"^XA^FO40,40^A0N,40,40^FDSANDBOX LABEL {code}^FS^XZ\n"
                return Response(zpl.encode(), media_type="application/zpl")
            return Response(_PDF_LABEL, media_type="application/pdf")

        @router.get("/track/{tracker_id}")
        async def public_tracking_page(tracker_id: str) -> Response:
            rec = self.state.trackers.get(tracker_id)
            if rec is None:
                return Response(status_code=404)
            code, status = rec.data["tracking_code"], rec.data["status"]
            return HTMLResponse(f"<html><body><h1>{code}</h1><p>{status}</p></body></html>")

        return router

    async def _serve(
        self,
        request: Request,
        action: Callable[[dict[str, Any]], tuple[int, Any]],
        *,
        index: bool = False,
    ) -> Response:
        try:
            self._authenticate(request)
            if index:
                self._limit_index_calls()
            body = await self._json_body(request)
            status, payload = action(body)
        except EasyPostError as exc:
            status, payload = exc.status, exc.envelope()
        return JSONResponse(payload, status_code=status, headers={"x-ep-request-uuid": self._request_uuid()})

    def _request_uuid(self) -> str:
        # A counter, not the shared dice: reading must not change which ids later writes get.
        self.state.requests += 1
        return f"{self.state.requests:08x}-5a4d-4b1e-8000-{self.state.requests:012x}"

    def _authenticate(self, request: Request) -> None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        key = ""
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            key = decoded.partition(":")[0]
        elif scheme.lower() == "bearer":
            key = credentials.strip()
        if not key:
            raise EasyPostError(401, "APIKEY.REQUIRED", "No API key provided; send it as the Basic auth username.")
        if not hmac.compare_digest(key.encode(), self.ctx.config.carrier_api_key.encode()):
            raise EasyPostError(401, "APIKEY.INACTIVE", "The API key provided is invalid or inactive.")

    def _limit_index_calls(self) -> None:
        now = self.ctx.clock.now()
        window = self.state.index_calls
        while window and (now - window[0]).total_seconds() >= 1.0:
            window.popleft()
        if len(window) >= INDEX_REQUESTS_PER_SECOND:
            raise EasyPostError(429, "RATE_LIMITED", "Index endpoints allow 5 requests per second.")
        window.append(now)

    @staticmethod
    async def _json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise EasyPostError(400, "BAD_REQUEST", "The request body is not valid JSON.") from None
        if not isinstance(parsed, dict):
            raise EasyPostError(400, "BAD_REQUEST", "The request body must be a JSON object.")
        return parsed

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{self.ctx.ids.getrandbits(128):032x}"

    def _next_seq(self) -> int:
        self.state.seq += 1
        return self.state.seq

    @staticmethod
    def _base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/carrier"

    # -- shipments ------------------------------------------------------------------------------

    def _shipment(self, shipment_id: str) -> _ShipmentRecord:
        rec = self.state.shipments.get(shipment_id)
        if rec is None:
            raise _not_found()
        return rec

    def _address(self, raw: Any, field_name: str) -> dict[str, Any]:
        if not isinstance(raw, dict) or not raw:
            raise _required(field_name)
        if str(raw.get("country") or "US").upper() == "US" and not raw.get("zip"):
            raise EasyPostError(
                422,
                "ADDRESS.VERIFY.FAILURE",
                "Address not found",
                [{"field": "zip", "message": "ZIP code is required for a US address", "suggestion": None}],
            )
        now = _ts(self.ctx.clock.now())
        keys = ("name", "company", "street1", "street2", "city", "state", "zip", "country", "phone", "email")
        address: dict[str, Any] = {"id": self._new_id("adr"), "object": "Address", "mode": self.mode}
        address |= {key: raw.get(key) for key in keys}
        address["country"] = str(raw.get("country") or "US").upper()
        address |= {"residential": raw.get("residential"), "created_at": now, "updated_at": now}
        return address

    def _parcel(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict) or not raw:
            raise _required("parcel")
        try:
            weight = float(raw["weight"])
        except (KeyError, TypeError, ValueError):
            raise EasyPostError(
                422, "PARAMETER.INVALID", "Invalid parameter.", [{"field": "parcel.weight", "message": "is required"}]
            ) from None
        if weight <= 0:
            raise EasyPostError(
                422, "PARAMETER.INVALID", "Invalid parameter.", [{"field": "parcel.weight", "message": "must be > 0"}]
            )
        now = _ts(self.ctx.clock.now())
        return {
            "id": self._new_id("prcl"),
            "object": "Parcel",
            "mode": self.mode,
            "length": raw.get("length"),
            "width": raw.get("width"),
            "height": raw.get("height"),
            "weight": weight,
            "predefined_package": raw.get("predefined_package"),
            "created_at": now,
            "updated_at": now,
        }

    def _rates(self, shipment: dict[str, Any]) -> list[dict[str, Any]]:
        zone = shipping_zone(shipment["from_address"], shipment["to_address"])
        pounds = max(1, math.ceil(float(shipment["parcel"]["weight"]) / 16))
        zone_factor = Decimal(1) + Decimal("0.15") * (zone - 1)
        now = _ts(self.ctx.clock.now())
        rates = []
        for service in _SERVICES:
            if pounds > service.max_pounds:
                continue
            amount = (service.base + service.per_pound * pounds) * zone_factor
            days = service.days(zone)
            rates.append(
                {
                    "id": self._new_id("rate"),
                    "object": "Rate",
                    "mode": self.mode,
                    "carrier": service.carrier,
                    "service": service.service,
                    "rate": _money(amount),
                    "currency": "USD",
                    "retail_rate": _money(amount * Decimal("1.35")),
                    "retail_currency": "USD",
                    "list_rate": _money(amount * Decimal("1.12")),
                    "list_currency": "USD",
                    "delivery_days": days,
                    "est_delivery_days": days,
                    "delivery_date": None,
                    "delivery_date_guaranteed": False,
                    "shipment_id": shipment["id"],
                    "carrier_account_id": _CARRIER_ACCOUNTS[service.carrier],
                    "created_at": now,
                    "updated_at": now,
                }
            )
        return rates

    def _create_shipment(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("shipment", body)
        if not isinstance(raw, dict) or not raw:
            raise _required("shipment")
        for name in ("to_address", "from_address", "parcel"):
            if not raw.get(name):
                raise _required(f"shipment.{name}")
        to_address = self._address(raw["to_address"], "shipment.to_address")
        from_address = self._address(raw["from_address"], "shipment.from_address")
        is_return = bool(raw.get("is_return"))
        if is_return:
            # EasyPost takes the outbound addresses and swaps them for a return label.
            to_address, from_address = from_address, to_address
        now = self.ctx.clock.now()
        shipment: dict[str, Any] = {
            "id": self._new_id("shp"),
            "object": "Shipment",
            "mode": self.mode,
            "reference": raw.get("reference"),
            "status": "unknown",
            "is_return": is_return,
            "to_address": to_address,
            "from_address": from_address,
            "return_address": from_address,
            "buyer_address": to_address,
            "parcel": self._parcel(raw["parcel"]),
            "options": dict(raw.get("options") or {}) | {"currency": "USD"},
            "customs_info": raw.get("customs_info"),
            "rates": [],
            "messages": [],
            "selected_rate": None,
            "postage_label": None,
            "tracking_code": None,
            "tracker": None,
            "insurance": None,
            "refund_status": None,
            "fees": [],
            "forms": [],
            "created_at": _ts(now),
            "updated_at": _ts(now),
        }
        shipment["rates"] = self._rates(shipment)
        self.state.shipments[shipment["id"]] = _ShipmentRecord(self._next_seq(), now, shipment)
        return shipment

    def _list_shipments(self, request: Request) -> dict[str, Any]:
        query = request.query_params
        records = sorted(self.state.shipments.values(), key=lambda r: r.seq, reverse=True)
        if purchased := query.get("purchased"):
            wanted = purchased.lower() == "true"
            records = [r for r in records if bool(r.data["postage_label"]) == wanted]
        page, has_more = self._page(records, query, lambda r: r.seq, lambda r: r.created, self.state.shipments)
        return {"shipments": [r.data for r in page], "has_more": has_more}

    def _page(
        self,
        records: list[Any],
        query: Any,
        seq_of: Callable[[Any], int],
        created_of: Callable[[Any], datetime],
        by_id: dict[str, Any],
    ) -> tuple[list[Any], bool]:
        """Newest first, narrowed by before_id/after_id and start/end datetimes, cut at page_size."""
        try:
            size = int(query.get("page_size", DEFAULT_PAGE_SIZE))
        except ValueError:
            size = DEFAULT_PAGE_SIZE
        size = max(1, min(MAX_PAGE_SIZE, size))
        if before := query.get("before_id"):
            if before not in by_id:
                raise _not_found()
            records = [r for r in records if seq_of(r) < seq_of(by_id[before])]
        if after := query.get("after_id"):
            if after not in by_id:
                raise _not_found()
            records = [r for r in records if seq_of(r) > seq_of(by_id[after])]
        if start := query.get("start_datetime"):
            since = _parse_when(start, "start_datetime")
            records = [r for r in records if created_of(r) >= since]
        if end := query.get("end_datetime"):
            until = _parse_when(end, "end_datetime")
            records = [r for r in records if created_of(r) <= until]
        return records[:size], len(records) > size

    def _rerate(self, shipment_id: str) -> dict[str, Any]:
        rec = self._shipment(shipment_id)
        rec.data["rates"] = self._rates(rec.data)
        rec.data["updated_at"] = _ts(self.ctx.clock.now())
        return {"rates": rec.data["rates"]}

    def _buy(self, request: Request, shipment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        rec = self._shipment(shipment_id)
        shipment = rec.data
        rate_ref = body.get("rate")
        rate_id = rate_ref.get("id") if isinstance(rate_ref, dict) else None
        if not rate_id:
            raise _required("rate")
        if shipment["postage_label"]:
            # The real code for a second buy was not verified; the 422 and its shape are modeled.
            raise EasyPostError(
                422, "SHIPMENT.POSTAGE.EXISTS", "Postage already exists for this shipment.", ["postage already bought"]
            )
        rate = next((r for r in shipment["rates"] if r["id"] == rate_id), None)
        if rate is None:
            raise EasyPostError(
                422,
                "SHIPMENT.RATE.INVALID",
                "The rate does not belong to this shipment.",
                [{"field": "rate.id", "message": f"{rate_id} is not a rate of {shipment_id}"}],
            )
        now = self.ctx.clock.now()
        code = self._tracking_code_for_label()
        final = TEST_TRACKING_CODES.get(code, "delivered")
        tracker = self._new_tracker(request, code, rate["carrier"], shipment, ["unknown", *_PATHS[final]], now)
        if shipment["is_return"]:
            # A return label waits for the customer to drop the parcel off, which may be never:
            # nothing scans it until then (EasyPost's test mode would walk it), so an unused return
            # label can still be voided when the return expires or is cancelled.
            tracker.paused = True
        base = self._base_url(request)
        shipment |= {
            "selected_rate": rate,
            "tracking_code": code,
            "tracker": tracker.data,
            "insurance": body.get("insurance"),
            "status": "unknown",
            "updated_at": _ts(now),
            "postage_label": {
                "id": self._new_id("pl"),
                "object": "PostageLabel",
                "label_date": _ts(now),
                "label_resolution": 300,
                "label_size": "4x6",
                "label_type": "default",
                "label_file_type": "application/pdf",
                "label_url": f"{base}/labels/{shipment_id}.pdf",
                "label_pdf_url": f"{base}/labels/{shipment_id}.pdf",
                "label_zpl_url": None,
                "label_epl2_url": None,
                "created_at": _ts(now),
                "updated_at": _ts(now),
            },
        }
        self._emit("tracker.created", tracker.data)
        return shipment

    def _tracking_code_for_label(self) -> str:
        if self.mode == "test":
            pick = self.ctx.random.random()
            for code, share in _BOUGHT_LABEL_CODES:
                if pick < share:
                    return code
                pick -= share
            return _BOUGHT_LABEL_CODES[0][0]
        return "9400" + "".join(str(self.ctx.random.randrange(10)) for _ in range(18))

    def _convert_label(self, request: Request, shipment_id: str) -> dict[str, Any]:
        shipment = self._shipment(shipment_id).data
        if not shipment["postage_label"]:
            raise EasyPostError(422, "SHIPMENT.POSTAGE.REQUIRED", "The shipment has no postage to convert.")
        file_format = request.query_params.get("file_format", "PDF").upper()
        if file_format not in {"PDF", "ZPL", "EPL2"}:
            raise EasyPostError(
                422,
                "PARAMETER.INVALID",
                "Invalid parameter.",
                [{"field": "file_format", "message": "PDF, ZPL or EPL2"}],
            )
        if file_format == "ZPL":
            shipment["postage_label"]["label_zpl_url"] = f"{self._base_url(request)}/labels/{shipment_id}.zpl"
        return shipment

    def _refund(self, shipment_id: str) -> dict[str, Any]:
        shipment = self._shipment(shipment_id).data
        if not shipment["postage_label"]:
            raise EasyPostError(422, "SHIPMENT.REFUND.UNAVAILABLE", "The shipment has no postage to refund.")
        if shipment["refund_status"] in {"submitted", "refunded"}:
            # Modeled: the real answer to a repeated refund was not verified. A rejected refund may be
            # submitted again, which EasyPost documents.
            raise EasyPostError(
                422, "SHIPMENT.REFUND.ALREADY_REQUESTED", f"A refund is already {shipment['refund_status']}."
            )
        now = self.ctx.clock.now()
        refund = {
            "id": self._new_id("rfnd"),
            "object": "Refund",
            "tracking_code": shipment["tracking_code"],
            "confirmation_number": None,
            "status": "submitted",
            "carrier": shipment["selected_rate"]["carrier"],
            "shipment_id": shipment_id,
            "created_at": _ts(now),
            "updated_at": _ts(now),
        }
        self.state.refunds[refund["id"]] = _RefundRecord(refund, now + timedelta(seconds=REFUND_SETTLE_SECONDS))
        shipment["refund_status"] = "submitted"
        shipment["updated_at"] = _ts(now)
        tracker = self.state.trackers.get(shipment["tracker"]["id"])
        if tracker is not None:
            # A voided label is not handed to the carrier, so its tracker stops moving.
            tracker.paused = True
        return shipment

    def _settle(self, refund: _RefundRecord, now: datetime) -> None:
        refund.settled = True
        shipment = self.state.shipments[refund.data["shipment_id"]].data
        tracker = self.state.trackers.get(shipment["tracker"]["id"])
        scanned = tracker is not None and tracker.data["status"] not in _UNSCANNED
        outcome = "rejected" if scanned else "refunded"
        refund.data |= {"status": outcome, "updated_at": _ts(now)}
        shipment |= {"refund_status": outcome, "updated_at": _ts(now)}
        if scanned and tracker is not None:
            tracker.paused = False
        if outcome == "refunded":
            if tracker is not None:
                tracker.data |= {"status": "cancelled", "updated_at": _ts(now)}
                shipment["tracker"] = tracker.data
            self._emit("refund.successful", refund.data)

    # -- trackers -------------------------------------------------------------------------------

    def _tracker(self, tracker_id: str) -> _TrackerRecord:
        rec = self.state.trackers.get(tracker_id)
        if rec is None:
            raise _not_found()
        return rec

    def _step(self) -> timedelta:
        seconds = self.ctx.config.demo.carrier_tracker_step_seconds
        return timedelta(seconds=DEFAULT_TRACKER_STEP_SECONDS if seconds is None else seconds)

    def _new_tracker(
        self,
        request: Request,
        code: str,
        carrier: str,
        shipment: dict[str, Any] | None,
        path: list[str],
        now: datetime,
    ) -> _TrackerRecord:
        tracker_id = self._new_id("trk")
        data: dict[str, Any] = {
            "id": tracker_id,
            "object": "Tracker",
            "mode": self.mode,
            "tracking_code": code,
            "status": path[0],
            "status_detail": _SCAN_MESSAGES[path[0]][1],
            "signed_by": None,
            "weight": shipment["parcel"]["weight"] if shipment else None,
            "est_delivery_date": _ts(now + timedelta(days=3)),
            "shipment_id": shipment["id"] if shipment else None,
            "carrier": carrier,
            "is_return": bool(shipment and shipment["is_return"]),
            "public_url": f"{self._base_url(request)}/track/{tracker_id}",
            "tracking_details": [],
            "carrier_detail": {"object": "CarrierDetail", "service": None, "origin_location": None},
            "fees": [],
            "created_at": _ts(now),
            "updated_at": _ts(now),
        }
        rec = _TrackerRecord(self._next_seq(), data, path, 0, now + self._step())
        self._record_scan(rec, now)
        self.state.trackers[tracker_id] = rec
        return rec

    def _record_scan(self, rec: _TrackerRecord, when: datetime) -> None:
        status = rec.path[rec.step]
        message, detail = _SCAN_MESSAGES[status]
        shipment = self.state.shipments.get(rec.data["shipment_id"] or "")
        where = shipment.data["to_address"] if shipment and status in {"out_for_delivery", "delivered"} else None
        if where is None and shipment is not None:
            where = shipment.data["from_address"]
        location = {"object": "TrackingLocation", "city": None, "state": None, "country": "US", "zip": None}
        if where is not None:
            location |= {"city": where["city"], "state": where["state"], "zip": where["zip"]}
        rec.data["tracking_details"].append(
            {
                "object": "TrackingDetail",
                "message": message,
                "status": status,
                "status_detail": detail,
                "datetime": _ts(when),
                "source": rec.data["carrier"],
                "tracking_location": location,
            }
        )
        rec.data |= {"status": status, "status_detail": detail, "updated_at": _ts(when)}
        if status == "delivered":
            rec.data["signed_by"] = "John Tester" if self.mode == "test" else "Recipient"

    def _progress(self, rec: _TrackerRecord, now: datetime) -> None:
        step = self._step()
        while not rec.paused and rec.step + 1 < len(rec.path) and rec.next_step_at <= now:
            at = rec.next_step_at
            previous = rec.data["status"]
            rec.step += 1
            self._record_scan(rec, at)
            rec.next_step_at = at + step
            shipment = self.state.shipments.get(rec.data["shipment_id"] or "")
            if shipment is not None:
                shipment.data["tracker"] = rec.data
            self._emit("tracker.updated", rec.data, previous_attributes={"status": previous}, at=at)

    def _create_tracker(self, request: Request, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raw = body.get("tracker", body)
        code = str(raw.get("tracking_code") or "").strip() if isinstance(raw, dict) else ""
        if not code:
            raise _required("tracker.tracking_code")
        carrier = str(raw.get("carrier") or "USPS")
        if self.mode == "test" and code not in TEST_TRACKING_CODES:
            # Modeled code: test mode accepts only the EasyPost test tracking codes.
            raise EasyPostError(
                422,
                "TRACKER.TRACKING_CODE.INVALID",
                "Test mode only accepts the test tracking codes EZ1000000001 to EZ7000000007.",
                [{"field": "tracking_code", "message": f"{code} is not a test tracking code"}],
            )
        for rec in self.state.trackers.values():
            # Modeled: EasyPost answers a repeated tracker create with the tracker it already has.
            if rec.data["tracking_code"] == code and rec.data["carrier"] == carrier and not rec.data["shipment_id"]:
                return 200, rec.data
        final = TEST_TRACKING_CODES.get(code, "delivered")
        rec = self._new_tracker(request, code, carrier, None, _PATHS[final], self.ctx.clock.now())
        self._emit("tracker.created", rec.data)
        return 201, rec.data

    def _list_trackers(self, request: Request) -> dict[str, Any]:
        records = sorted(self.state.trackers.values(), key=lambda r: r.seq, reverse=True)
        if code := request.query_params.get("tracking_code"):
            records = [r for r in records if r.data["tracking_code"] == code]
        page, has_more = self._page(
            records,
            request.query_params,
            lambda r: r.seq,
            lambda r: _parse_when(r.data["created_at"], "created_at"),
            self.state.trackers,
        )
        return {"trackers": [r.data for r in page], "has_more": has_more}

    # -- webhooks and events --------------------------------------------------------------------

    def _subscriptions(self) -> list[Subscription]:
        return [s for s in self.ctx.outbox.subscriptions_of(self.name) if not s.deleted]

    def _subscription(self, webhook_id: str) -> Subscription:
        sub = self.ctx.outbox.subscriptions.get(webhook_id)
        if sub is None or sub.system != self.name or sub.deleted:
            raise _not_found()
        return sub

    def _webhook_json(self, sub: Subscription) -> dict[str, Any]:
        return {
            "id": sub.id,
            "object": "Webhook",
            "mode": self.mode,
            "url": sub.url,
            "created_at": sub.extra.get("created_at"),
            "disabled_at": None if sub.active else sub.extra.get("disabled_at") or _ts(self.ctx.clock.now()),
            "custom_headers": sub.extra.get("custom_headers", []),
        }

    @staticmethod
    def _custom_headers(raw: Any) -> list[dict[str, str]]:
        if raw is None:
            return []
        if not isinstance(raw, list) or not all(isinstance(h, dict) and h.get("name") for h in raw):
            raise EasyPostError(
                422,
                "PARAMETER.INVALID",
                "Invalid parameter.",
                [{"field": "webhook.custom_headers", "message": "must be a list of {name, value}"}],
            )
        return [{"name": str(h["name"]), "value": str(h.get("value", ""))} for h in raw]

    def _create_webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("webhook", body)
        url = raw.get("url") if isinstance(raw, dict) else None
        if not url:
            raise _required("webhook.url")
        sub = self.ctx.outbox.subscribe(
            self.name,
            ["*"],
            str(url),
            secret=raw.get("webhook_secret"),
            subscription_id=self._new_id("hook"),
            extra={
                "created_at": _ts(self.ctx.clock.now()),
                "custom_headers": self._custom_headers(raw.get("custom_headers")),
            },
        )
        return self._webhook_json(sub)

    def _update_webhook(self, webhook_id: str, body: dict[str, Any]) -> dict[str, Any]:
        sub = self._subscription(webhook_id)
        raw = body.get("webhook", body)
        if isinstance(raw, dict):
            if "webhook_secret" in raw:
                sub.secret = raw["webhook_secret"]
            if "custom_headers" in raw:
                sub.extra["custom_headers"] = self._custom_headers(raw["custom_headers"])
        # An update re-enables a webhook EasyPost disabled after repeated failures.
        sub.active = True
        sub.consecutive_failures = 0
        sub.extra["disabled_at"] = None
        return self._webhook_json(sub)

    def _delete_webhook(self, webhook_id: str) -> dict[str, Any]:
        self._subscription(webhook_id)
        self.ctx.outbox.unsubscribe(webhook_id)
        return {}

    def _sign(self, sub: Subscription, delivery: Delivery, raw: bytes, at: datetime) -> dict[str, str]:
        headers = {"User-Agent": "EasyPost WebHook Agent 1.0"}
        for header in sub.extra.get("custom_headers", []):
            headers[header["name"]] = header["value"]
        if sub.secret:
            headers["X-Hmac-Signature"] = signature_header(sub.secret, raw)
        return headers

    def _emit(
        self,
        description: str,
        result: dict[str, Any],
        previous_attributes: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        # A tick may catch up several scans at once; each event keeps the time of its own scan.
        now = at or self.ctx.clock.now()
        subscribers = [s for s in self._subscriptions() if s.wants(description)]
        event: dict[str, Any] = {
            "id": self._new_id("evt"),
            "object": "Event",
            "mode": self.mode,
            "description": description,
            "status": "pending",
            "previous_attributes": previous_attributes or {},
            "pending_urls": [s.url for s in subscribers],
            "completed_urls": [],
            "user_id": "user_sandbox00000000000000000000000",
            "created_at": _ts_ms(now),
            "updated_at": _ts_ms(now),
            "result": copy.deepcopy(result),
        }
        body = json.dumps(event, separators=(",", ":"))
        self.state.events[event["id"]] = _EventRecord(self._next_seq(), event, body, result["id"])
        self.ctx.outbox.emit(self.name, description, body, event_id=event["id"])

    def _event(self, event_id: str) -> _EventRecord:
        rec = self.state.events.get(event_id)
        if rec is None:
            raise _not_found()
        return rec

    def _event_json(self, rec: _EventRecord) -> dict[str, Any]:
        """The event with delivery bookkeeping read from the outbox: which URLs are done, which wait."""
        deliveries = [d for d in self.ctx.outbox.deliveries.values() if d.event_id == rec.data["id"]]
        completed = sorted({d.url for d in deliveries if d.status is DeliveryStatus.DELIVERED})
        pending = sorted({d.url for d in deliveries if d.status is DeliveryStatus.PENDING} - set(completed))
        failed = any(d.status is DeliveryStatus.FAILED for d in deliveries)
        status = "pending" if pending else ("failed" if failed and not completed else "completed")
        return rec.data | {"pending_urls": pending, "completed_urls": completed, "status": status}

    def _list_events(self, request: Request) -> dict[str, Any]:
        records = sorted(self.state.events.values(), key=lambda r: r.seq, reverse=True)
        page, has_more = self._page(
            records,
            request.query_params,
            lambda r: r.seq,
            lambda r: _parse_when(r.data["created_at"], "created_at"),
            self.state.events,
        )
        return {"events": [self._event_json(r) for r in page], "has_more": has_more}

    def _resend_event(self, body: dict[str, Any]) -> dict[str, Any]:
        result_id = body.get("result_id")
        if not result_id:
            raise _required("result_id")
        matching = [r for r in self.state.events.values() if r.result_id == result_id]
        if not matching:
            raise _not_found()
        newest = max(matching, key=lambda r: r.seq)
        # The same event, byte for byte, so a receiver dedupes it on its id.
        self.ctx.outbox.emit(self.name, newest.data["description"], newest.body, event_id=newest.data["id"])
        return self._event_json(newest)

    # -- snapshot helpers -------------------------------------------------------------------------

    @staticmethod
    def _shipment_summary(shipment: dict[str, Any]) -> dict[str, Any]:
        rate = shipment["selected_rate"]
        return {
            "id": shipment["id"],
            "reference": shipment["reference"],
            "mode": shipment["mode"],
            "is_return": shipment["is_return"],
            "created_at": shipment["created_at"],
            "from_zip": shipment["from_address"]["zip"],
            "to_zip": shipment["to_address"]["zip"],
            "rates": len(shipment["rates"]),
            "purchased": bool(shipment["postage_label"]),
            "selected_rate": (
                {"id": rate["id"], "carrier": rate["carrier"], "service": rate["service"], "rate": rate["rate"]}
                if rate
                else None
            ),
            "tracking_code": shipment["tracking_code"],
            "label_url": (shipment["postage_label"] or {}).get("label_url"),
            "tracker_id": (shipment["tracker"] or {}).get("id"),
            "refund_status": shipment["refund_status"],
        }

"""The WMS simulator: a ShipBob-shaped REST API with per-location stock and a fulfilment engine.

It serves `/{version}/...` (2025-07, 2026-01, 2026-07) under the sandbox's `/wms` prefix and
behaves like ShipBob where orderflow depends on it:

- a Bearer personal access token, and the `shipbob_channel_id` header on writes;
- 150 requests per minute in a sliding window, answered with `429 {statusCode, message}`, and
  `x-retry-after` / `x-remaining-calls` headers;
- creating an order commits stock per fulfilment centre; a `reference_id` is unique per
  account, so a duplicate create is a 422;
- an extension beyond ShipBob, which has no reserve call: `inventory-reservation` commits stock
  ahead of the order, all or nothing, idempotent on `reference_id`; an order with the same
  `reference_id` consumes it, and an order can carry the label orderflow bought (`label_*` tags),
  which the fulfilment engine ships with;
- `GET /location` lists the fulfilment centres with their addresses;
- shipments move Processing -> LabeledCreated -> Completed on the sandbox clock; a label sets
  tracking, takes the units off the shelf and fires `order.shipped`;
- returns move Awaiting Arrival -> Arrived -> Processing -> Completed when received; the warehouse
  dispositions each unit (Restock puts it back on the shelf, Quarantine or Dispose do not) and
  `return.completed` reports it per item in `action_taken`. In demo mode the warehouse receives a
  return by itself after a delay, finding a configurable share of the units damaged;
- an unshipped shipment's line items can be cut (`shipment/{id}:getLineItems` and
  `:updateLineItems`, which takes the complete list) or the shipment cancelled (`shipment/{id}:cancel`);
- webhooks are signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`,
  `webhook-signature: v1,<base64>`) and retried on ShipBob's published schedule.

Sandbox-only routes live under `/{version}/simulate/...`: ShipBob's own `simulate/shipment`,
plus `simulate/return` (receive a return) and `simulate/rate-limit` (shrink the window in tests).
The authentication and signing here are written independently of `orderflow.adapters`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import math
import string
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request, Response

from orderflow.sandbox.core import SandboxContext, Simulator
from orderflow.sandbox.faults import FaultKind, FaultRule
from orderflow.sandbox.outbox import Delivery, Subscription, SystemWebhookPolicy
from orderflow.sandbox.seed import CATALOG, WAREHOUSES, Warehouse

API_VERSIONS = frozenset({"2025-07", "2026-01", "2026-07"})

# Third-party AsyncAPI mirror: immediate, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. The outbox
# makes the first attempt itself, so the schedule lists the waits before each retry.
RETRY_SCHEDULE_SECONDS = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
WEBHOOK_TIMEOUT_SECONDS = 15.0
RATE_WINDOW_SECONDS = 60.0

# Modelled, not published: how long a labelled parcel waits for the carrier scan, and the transit.
COMPLETE_AFTER_SECONDS = 60.0
DELIVER_AFTER_SECONDS = 600.0

ORDER_TYPES = ("DTC", "DropShip", "B2B")
RETURN_ACTIONS = ("Default", "Restock", "Quarantine", "Dispose")
TOPICS = frozenset(
    {
        "order.shipped",
        "order.shipment.delivered",
        "order.shipment.exception",
        "order.shipment.on_hold",
        "order.shipment.cancelled",
        "return.created",
        "return.updated",
        "return.completed",
        "billing.charge.created",
        "billing.refund.created",
        "billing.credit.created",
    }
)
TOPICS_2026_07 = frozenset(
    {
        "order.delivered",
        "order.shipment.tracking.updated",
        "order.shipment.address.updated",
        "order.shipment.line_item.added",
        "order.shipment.line_item.removed",
        "order.shipment.line_item.updated",
        "order.shipment.shipping_service.updated",
    }
)

# Shipment statuses from which the warehouse can still stop the parcel.
CANCELLABLE = frozenset({"None", "Processing", "Exception", "OnHold", "ImportReview"})
LABELLED = frozenset({"LabeledCreated", "Completed"})

# Shipping method -> (carrier, service, tracking URL template). Modelled.
CARRIER_SERVICES: dict[str, tuple[str, str, str]] = {
    "standard": ("USPS", "Ground Advantage", "https://tools.usps.com/go/TrackConfirmAction?tLabels={}"),
    "expedited": ("UPS", "2nd Day Air", "https://www.ups.com/track?tracknum={}"),
    "overnight": ("FedEx", "Priority Overnight", "https://www.fedex.com/fedextrack/?trknbr={}"),
    "freight": ("Estes", "LTL", "https://www.estes-express.com/myestes/shipment-tracking/?pro={}"),
}

# Modelled: the time zone of each fulfilment centre, by state.
TIMEZONES = {"IL": "America/Chicago", "CA": "America/Los_Angeles"}

_PROBLEM_TYPES = {
    400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
    403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
    404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
    422: "https://tools.ietf.org/html/rfc4918#section-11.2",
}


def _iso(when: datetime | None) -> str | None:
    """A ShipBob timestamp: ISO 8601 in UTC with a Z."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _seconds_text(seconds: float) -> str:
    """Seconds as a header value: whole numbers without a decimal point."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _Reply(Exception):
    """A finished answer raised from inside a handler: an error in ShipBob's shape, or a reply with headers."""

    def __init__(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload
        self.headers = headers or {}


def problem(status: int, detail: str, errors: dict[str, list[str]] | None = None, *, title: str = "") -> _Reply:
    """ASP.NET problem details, the shape of ShipBob's 4xx answers."""
    body: dict[str, Any] = {
        "type": _PROBLEM_TYPES.get(status, "about:blank"),
        "title": title or ("One or more validation errors occurred." if errors else _phrase(status)),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return _Reply(status, body)


@dataclass
class _Item:
    """A product ShipBob stocks: its inventory id, SKU and name."""

    inventory_id: int
    sku: str
    name: str
    weight_oz: int = 16


@dataclass
class _Cell:
    """Stock of one item in one fulfilment centre."""

    on_hand: int
    committed: int = 0
    awaiting: int = 0
    internal_transfer: int = 0

    @property
    def fulfillable(self) -> int:
        """Units on the shelf that no order has claimed."""
        return max(0, self.on_hand - self.committed)


@dataclass
class _OrderLine:
    """A product line of an order as it was sent."""

    inventory_id: int
    sku: str
    quantity: int
    unit_price: float | None
    external_line_id: int | None


@dataclass
class _Shipment:
    """A shipment: the part of an order one fulfilment centre ships."""

    id: int
    order_id: int
    location_id: int
    lines: dict[int, int]  # inventory id -> quantity
    status: str
    created_at: datetime
    committed: bool
    status_details: list[dict[str, Any]] = field(default_factory=list)
    tracking: dict[str, Any] | None = None
    labelled_at: datetime | None = None
    completed_at: datetime | None = None
    delivered_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class _Order:
    """A fulfilment order as the merchant sent it, with the shipments the WMS made of it."""

    id: int
    reference_id: str
    order_number: str | None
    type: str
    shipping_method: str
    recipient: dict[str, Any]
    lines: list[_OrderLine]
    created_at: datetime
    purchase_date: str | None
    tags: list[dict[str, str]]
    total_price: float | None
    location_id: int | None
    gift_message: str | None
    shipment_ids: list[int] = field(default_factory=list)


@dataclass
class _Reservation:
    """Stock held for an order that is not created yet (an orderflow extension; ShipBob has none)."""

    id: int
    reference_id: str
    lines: list[tuple[int, int, int]]  # (inventory id, location id, quantity)
    created_at: datetime
    status: str = "Active"  # Active -> Released | Consumed
    released_at: datetime | None = None
    consumed_at: datetime | None = None
    order_id: int | None = None


@dataclass
class _ReturnLine:
    """One returned item with what the merchant asked for and what the warehouse did."""

    inventory_id: int
    quantity: int
    requested_action: str
    action_taken: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Return:
    """A return order (RMA) on its way back into a fulfilment centre."""

    id: int
    reference_id: str
    location_id: int
    lines: list[_ReturnLine]
    original_shipment_id: int | None
    tracking_number: str | None
    status: str
    created_at: datetime
    history: list[tuple[str, datetime]] = field(default_factory=list)

    def date_of(self, status: str) -> datetime | None:
        """When the return last entered a status."""
        dates = [at for name, at in self.history if name == status]
        return dates[-1] if dates else None


@dataclass
class _Scheduled:
    """A step of a `simulate/shipment` chain waiting for its delay."""

    due_at: datetime
    shipment_id: int
    action: str
    then: dict[str, Any] | None


Handler = Callable[[Request, Any], tuple[int, Any]]


class WmsSimulator(Simulator):
    """ShipBob, simulated: orders, shipments, stock per fulfilment centre, returns and webhooks."""

    name = "wms"

    def __init__(self, ctx: SandboxContext) -> None:
        super().__init__(ctx)
        ctx.outbox.register_system(
            self.name,
            SystemWebhookPolicy(
                retry_schedule=RETRY_SCHEDULE_SECONDS,
                timeout_seconds=WEBHOOK_TIMEOUT_SECONDS,
                disable_subscription_when_exhausted=True,
            ),
            self._sign,
        )
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Back to the seed: catalogue stock per location, no orders, returns or rate-limit history."""
        self.locations: dict[int, str] = {w.wms_location_id: w.name for w in WAREHOUSES}
        self.items: dict[int, _Item] = {}
        self.stock: dict[tuple[int, int], _Cell] = {}
        for item in CATALOG:
            self.items[item.wms_inventory_id] = _Item(item.wms_inventory_id, item.sku, item.name, int(item.weight_oz))
            for location_id, on_hand in item.stock.items():
                self.stock[(item.wms_inventory_id, location_id)] = _Cell(on_hand=on_hand)
        self.by_sku: dict[str, int] = {item.sku: item.inventory_id for item in self.items.values()}
        self.orders: dict[int, _Order] = {}
        self.shipments: dict[int, _Shipment] = {}
        self.returns: dict[int, _Return] = {}
        self.reservations: dict[int, _Reservation] = {}
        self.scheduled: list[_Scheduled] = []
        self.calls: deque[float] = deque()
        self.rate_limit_override: int | None = None
        self._order_ids = itertools.count(100000001)
        self._shipment_ids = itertools.count(200000001)
        self._return_ids = itertools.count(300000001)
        self._reservation_ids = itertools.count(400000001)
        self._inventory_ids = itertools.count(9901)
        self._simulation_ids = itertools.count(1)

    def snapshot(self) -> dict[str, Any]:
        """Orders with their shipments, stock per SKU and location, returns, subscriptions, limits."""
        return {
            "orders": [self._order_state(order) for order in self.orders.values()],
            "stock": [
                {
                    "sku": self.items[inventory_id].sku,
                    "inventory_id": inventory_id,
                    "location_id": location_id,
                    "on_hand": cell.on_hand,
                    "committed": cell.committed,
                    "fulfillable": cell.fulfillable,
                    "awaiting": cell.awaiting,
                }
                for (inventory_id, location_id), cell in sorted(self.stock.items())
            ],
            "returns": [self._return_view(ret) for ret in self.returns.values()],
            "reservations": [self._reservation_view(r) for r in self.reservations.values()],
            "subscriptions": [
                {"id": s.id, "topics": s.topics, "url": s.url, "active": s.active, "deleted": s.deleted}
                for s in self.ctx.outbox.subscriptions_of(self.name)
            ],
            "rate_limit": {"requests_per_minute": self._limit(), "calls_in_window": len(self.calls)},
        }

    def _order_state(self, order: _Order) -> dict[str, Any]:
        return {
            "id": order.id,
            "reference_id": order.reference_id,
            "order_number": order.order_number,
            "status": self._order_status(order),
            "shipments": [
                {
                    "id": s.id,
                    "status": s.status,
                    "location_id": s.location_id,
                    "committed": s.committed,
                    "lines": [
                        {"sku": self.items[inv].sku, "inventory_id": inv, "quantity": qty}
                        for inv, qty in s.lines.items()
                    ],
                    "tracking": s.tracking,
                    "delivered": s.delivered_at is not None,
                }
                for s in self._shipments_of(order)
            ],
        }

    # ------------------------------------------------------------------ HTTP plumbing

    def router(self) -> APIRouter:
        """ShipBob's routes under `/{version}`, plus the sandbox's `simulate/...` helpers."""
        router = APIRouter()
        routes: list[tuple[str, str, Handler, bool, bool]] = [
            # method, path, handler, needs the channel header, counts against the rate limit
            ("POST", "/{version}/order", self._create_order, True, True),
            ("GET", "/{version}/order", self._list_orders, False, True),
            ("GET", "/{version}/order/{order_id}", self._get_order, False, True),
            ("GET", "/{version}/order/{order_id}/shipment", self._get_order_shipments, False, True),
            ("POST", "/{version}/order/{order_id}:cancel", self._cancel_order, True, True),
            ("POST", "/{version}/shipment/{shipment_id}:cancel", self._cancel_shipment, True, True),
            ("GET", "/{version}/shipment/{shipment_id}:getLineItems", self._get_line_items, False, True),
            ("POST", "/{version}/shipment/{shipment_id}:updateLineItems", self._update_line_items, True, True),
            ("GET", "/{version}/inventory-level/locations", self._inventory_locations, False, True),
            ("GET", "/{version}/inventory-level/{inventory_id}/locations", self._inventory_item, False, True),
            ("POST", "/{version}/inventory-reservation", self._create_reservation, True, True),
            ("GET", "/{version}/inventory-reservation", self._list_reservations, False, True),
            ("GET", "/{version}/inventory-reservation/{reservation_id}", self._get_reservation, False, True),
            (
                "POST",
                "/{version}/inventory-reservation/{reservation_id}:release",
                self._release_reservation,
                True,
                True,
            ),
            ("GET", "/{version}/location", self._list_locations, False, True),
            ("POST", "/{version}/return", self._create_return, True, True),
            ("GET", "/{version}/return", self._list_returns, False, True),
            ("GET", "/{version}/return/{return_id}", self._get_return, False, True),
            ("PUT", "/{version}/return/{return_id}", self._update_return, True, True),
            ("POST", "/{version}/return/{return_id}:cancel", self._cancel_return, True, True),
            ("POST", "/{version}/webhook", self._create_webhook, False, True),
            ("GET", "/{version}/webhook", self._list_webhooks, False, True),
            ("DELETE", "/{version}/webhook/{subscription_id}", self._delete_webhook, False, True),
            ("POST", "/{version}/simulate/shipment", self._simulate_shipment, False, False),
            ("POST", "/{version}/simulate/return", self._simulate_return, False, False),
            ("PUT", "/{version}/simulate/rate-limit", self._simulate_rate_limit, False, False),
        ]
        for method, path, handler, write, limited in routes:
            router.add_api_route(
                path, self._endpoint(handler, write=write, limited=limited), methods=[method], include_in_schema=False
            )
        return router

    def _endpoint(self, handler: Handler, *, write: bool, limited: bool) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            headers: dict[str, str] = {}
            try:
                if request.path_params.get("version") not in API_VERSIONS:
                    raise problem(404, f"Unknown API version {request.path_params.get('version')!r}.")
                self._authenticate(request)
                if limited:
                    self._admit()
                headers["x-remaining-calls"] = str(self._remaining())
                if write:
                    self._check_channel(request)
                body = self._parse_body(raw) if request.method in ("POST", "PUT") else None
                status, payload = handler(request, body)
            except _Reply as reply:
                status, payload = reply.status, reply.payload
                headers = {"x-remaining-calls": str(self._remaining()), **reply.headers}
            return self._render(status, payload, headers)

        return endpoint

    @staticmethod
    def _render(status: int, payload: Any, headers: dict[str, str]) -> Response:
        if status == 204 or payload is None:
            return Response(status_code=status, headers=headers)
        content = json.dumps(payload, separators=(",", ":")).encode()
        return Response(content=content, status_code=status, headers=headers, media_type="application/json")

    @staticmethod
    def _parse_body(raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise problem(
                400, "The request body is not valid JSON.", {"$": ["The JSON value could not be parsed."]}
            ) from None

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expected = self.ctx.config.wms_token
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise _Reply(401, {"statusCode": 401, "message": "Authorization has been denied for this request."})

    def _check_channel(self, request: Request) -> None:
        raw = request.headers.get("shipbob_channel_id")
        if raw is None or not raw.strip():
            raise problem(400, "The shipbob_channel_id header is required.", {"shipbob_channel_id": ["Required."]})
        if raw.strip() != str(self.ctx.config.wms_channel_id):
            raise problem(
                400,
                f"Channel {raw.strip()} does not exist or has no write access.",
                {"shipbob_channel_id": [f"Invalid channel id {raw.strip()}."]},
            )

    # ------------------------------------------------------------------ rate limit

    def _limit(self) -> int:
        return self.rate_limit_override or self.ctx.config.wms_requests_per_minute

    def _prune(self) -> float:
        now = self.ctx.clock.timestamp()
        while self.calls and self.calls[0] <= now - RATE_WINDOW_SECONDS:
            self.calls.popleft()
        return now

    def _remaining(self) -> int:
        self._prune()
        return max(0, self._limit() - len(self.calls))

    def _admit(self) -> None:
        """Count a call in the sliding window, or refuse it the way ShipBob does."""
        now = self._prune()
        if len(self.calls) >= self._limit():
            wait = max(1, math.ceil(self.calls[0] + RATE_WINDOW_SECONDS - now))
            raise self._throttled(wait)
        self.calls.append(now)

    @staticmethod
    def _throttled(wait: float) -> _Reply:
        text = _seconds_text(wait)
        body = {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {text} seconds."}
        return _Reply(429, body, {"x-retry-after": text, "x-remaining-calls": "0"})

    def fault_response(self, kind: FaultKind, rule: FaultRule) -> tuple[int, dict[str, str], bytes]:
        """An injected throttle as ShipBob's 429, anything else as problem details."""
        if kind is FaultKind.THROTTLE:
            reply = self._throttled(rule.retry_after)
        else:
            reply = problem(
                rule.status, f"Injected fault {rule.id or kind.value}.", title=HTTPStatus(rule.status).phrase
            )
            reply.headers["x-remaining-calls"] = str(self._remaining())
        return reply.status, reply.headers, json.dumps(reply.payload).encode()

    # ------------------------------------------------------------------ helpers

    def _order(self, request: Request) -> _Order:
        try:
            order = self.orders.get(int(request.path_params["order_id"]))
        except ValueError:
            order = None
        if order is None:
            raise problem(404, f"Order {request.path_params['order_id']} was not found.")
        return order

    def _shipments_of(self, order: _Order) -> list[_Shipment]:
        return [self.shipments[sid] for sid in order.shipment_ids]

    def _order_status(self, order: _Order) -> str:
        statuses = [s.status for s in self._shipments_of(order)]
        live = [s for s in statuses if s != "Cancelled"]
        if not live:
            return "Cancelled"
        if "Exception" in live:
            return "Exception"
        shipped = [s for s in live if s in LABELLED]
        if len(shipped) == len(live):
            return "Fulfilled"
        return "PartiallyFulfilled" if shipped else "Processing"

    def _event_id(self) -> str:
        alphabet = string.ascii_letters + string.digits
        return "msg_" + "".join(self.ctx.ids.choices(alphabet, k=27))

    def _emit(self, topic: str, payload: dict[str, Any]) -> None:
        self.ctx.outbox.emit(self.name, topic, payload, event_id=self._event_id())

    def _emit_shipment(self, topic: str, order: _Order, shipment: _Shipment) -> None:
        """A shipment event: the order model, carrying only the shipment the event is about."""
        payload = self._order_view(order, only_shipment=shipment.id)
        payload["event_time"] = _iso(self.ctx.clock.now())
        self._emit(topic, payload)

    def _sign(self, sub: Subscription, delivery: Delivery, raw: bytes, at: datetime) -> dict[str, str]:
        """Standard Webhooks headers: HMAC-SHA256 over `id.timestamp.body` with the whsec_ key."""
        secret = sub.secret or self.ctx.config.wms_webhook_secret
        key = base64.b64decode(secret.removeprefix("whsec_"))
        timestamp = str(int(at.timestamp()))
        signed = f"{delivery.event_id}.{timestamp}.".encode() + raw
        signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return {
            "webhook-id": delivery.event_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": f"v1,{signature}",
            "x-webhook-topic": delivery.topic,
        }

    # ------------------------------------------------------------------ views

    def _location_view(self, location_id: int) -> dict[str, Any]:
        return {"id": location_id, "name": self.locations.get(location_id)}

    def _shipment_view(self, shipment: _Shipment) -> dict[str, Any]:
        order = self.orders[shipment.order_id]
        weight = sum(self.items[inv].weight_oz * qty for inv, qty in shipment.lines.items())
        view: dict[str, Any] = {
            "id": shipment.id,
            "order_id": order.id,
            "reference_id": order.reference_id,
            "recipient": {
                "name": order.recipient.get("name"),
                "full_name": order.recipient.get("name"),
                "address": order.recipient.get("address"),
                "email": order.recipient.get("email"),
                "phone_number": order.recipient.get("phone_number"),
            },
            "created_date": _iso(shipment.created_at),
            "last_update_at": _iso(shipment.updated_at or shipment.created_at),
            "last_tracking_update_at": _iso(shipment.labelled_at),
            "status": shipment.status,
            "status_details": shipment.status_details,
            "location": self._location_view(shipment.location_id),
            "invoice_amount": None,
            "invoice_currency_code": None,
            "insurance_value": None,
            "ship_option": order.shipping_method,
            "products": [
                {
                    "id": inv,
                    "reference_id": self.items[inv].sku,
                    "sku": self.items[inv].sku,
                    "name": self.items[inv].name,
                    "inventory_items": [
                        {
                            "id": inv,
                            "name": self.items[inv].name,
                            "quantity": qty,
                            "quantity_committed": qty if shipment.committed else 0,
                            "is_dangerous_goods": False,
                            "lot": None,
                            "expiration_date": None,
                            "serial_numbers": [],
                        }
                    ],
                }
                for inv, qty in shipment.lines.items()
            ],
            "parent_cartons": None,
            "measurements": {"depth_in": 6, "length_in": 12, "width_in": 10, "total_weight_oz": weight},
            "package_material_type": "Box",
            "require_signature": False,
            "gift_message": order.gift_message,
            "actual_fulfillment_date": _iso(shipment.labelled_at),
            "delivery_date": _iso(shipment.delivered_at),
            "estimated_fulfillment_date": _iso(shipment.created_at + timedelta(days=1)),
            "estimated_fulfillment_date_status": "FulfilledOnTime" if shipment.labelled_at else "PendingOnTime",
            "is_tracking_uploaded": False,
        }
        # The spec types `tracking` as an object, never null: it appears once there is a label.
        if shipment.tracking is not None:
            view["tracking"] = shipment.tracking
        return view

    def _order_view(self, order: _Order, *, only_shipment: int | None = None) -> dict[str, Any]:
        shipments = [s for s in self._shipments_of(order) if only_shipment is None or s.id == only_shipment]
        return {
            "id": order.id,
            "created_date": _iso(order.created_at),
            "purchase_date": order.purchase_date,
            "reference_id": order.reference_id,
            "order_number": order.order_number,
            "status": self._order_status(order),
            "type": order.type,
            "channel": {"id": self.ctx.config.wms_channel_id, "name": "orderflow"},
            "shipping_method": order.shipping_method,
            "recipient": order.recipient,
            "products": [
                {
                    "id": line.inventory_id,
                    "reference_id": line.sku,
                    "sku": line.sku,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "external_line_id": line.external_line_id,
                    "gtin": None,
                    "upc": None,
                    "quantity_unit_of_measure_code": None,
                }
                for line in order.lines
            ],
            "tags": order.tags,
            "financials": {"total_price": order.total_price},
            "gift_message": order.gift_message,
            "shipments": [self._shipment_view(s) for s in shipments],
        }

    def _cell_view(self, location_id: int, cell: _Cell) -> dict[str, Any]:
        return {
            "location_id": location_id,
            "name": self.locations.get(location_id),
            "on_hand_quantity": cell.on_hand,
            "committed_quantity": cell.committed,
            "fulfillable_quantity": cell.fulfillable,
            "awaiting_quantity": cell.awaiting,
            "internal_transfer_quantity": cell.internal_transfer,
        }

    def _item_view(self, item: _Item, location_id: int | None = None) -> dict[str, Any]:
        cells = sorted((loc, cell) for (inv, loc), cell in self.stock.items() if inv == item.inventory_id)
        return {
            "inventory_id": item.inventory_id,
            "sku": item.sku,
            "name": item.name,
            "locations": [self._cell_view(loc, c) for loc, c in cells if location_id is None or loc == location_id],
        }

    # ------------------------------------------------------------------ orders

    def _create_order(self, request: Request, body: Any) -> tuple[int, Any]:
        lines, location_id = self._validate_order(body)
        reference_id = body["reference_id"].strip()
        if any(o.reference_id == reference_id for o in self.orders.values()):
            raise problem(
                422,
                f"An order with reference_id {reference_id} already exists for this channel.",
                {"reference_id": [f"Order with reference_id '{reference_id}' already exists."]},
            )
        reservation = self._live_reservation(reference_id)
        if reservation is not None:
            self._check_reservation_matches(reservation, lines)
        now = self.ctx.clock.now()
        recipient = body["recipient"]
        order = _Order(
            id=next(self._order_ids),
            reference_id=reference_id,
            order_number=body.get("order_number"),
            type=body["type"],
            shipping_method=body["shipping_method"],
            recipient={
                "name": recipient["name"],
                "address": {
                    key: recipient["address"].get(key)
                    for key in ("address1", "address2", "company_name", "city", "state", "zip_code", "country")
                },
                "email": recipient.get("email"),
                "phone_number": recipient.get("phone_number"),
            },
            lines=lines,
            created_at=now,
            purchase_date=body.get("purchase_date"),
            tags=[{"name": str(t["name"]), "value": str(t["value"])} for t in body.get("tags") or []],
            total_price=(body.get("financials") or {}).get("total_price"),
            location_id=location_id,
            gift_message=body.get("gift_message"),
        )
        self.orders[order.id] = order
        if reservation is not None:
            self._consume(order, reservation, now)
        else:
            self._allocate(order, now)
        for shipment in self._shipments_of(order):
            if shipment.status == "Exception":
                self._emit_shipment("order.shipment.exception", order, shipment)
        return 201, self._order_view(order)

    def _validate_order(self, body: Any) -> tuple[list[_OrderLine], int | None]:
        """Required fields as ShipBob's model binding checks them; products resolved to inventory."""
        errors: dict[str, list[str]] = {}

        def need(ok: bool, path: str, message: str) -> None:
            if not ok:
                errors.setdefault(path, []).append(message)

        if not isinstance(body, dict):
            raise problem(400, "A request body is required.", {"$": ["A non-empty request body is required."]})
        for key in ("reference_id", "shipping_method"):
            value = body.get(key)
            need(isinstance(value, str) and bool(value.strip()), key, f"The {key} field is required.")
        need(body.get("type") in ORDER_TYPES, "type", f"The type field is required and must be one of {ORDER_TYPES}.")
        recipient = body.get("recipient")
        if not isinstance(recipient, dict):
            need(False, "recipient", "The recipient field is required.")
        else:
            need(bool(str(recipient.get("name") or "").strip()), "recipient.name", "The name field is required.")
            address = recipient.get("address")
            if not isinstance(address, dict):
                need(False, "recipient.address", "The address field is required.")
            else:
                for key in ("address1", "city", "country"):
                    ok = bool(str(address.get(key) or "").strip())
                    need(ok, f"recipient.address.{key}", f"The {key} field is required.")
        location_id = body.get("location_id")
        if location_id is not None:
            need(location_id in self.locations, "location_id", f"Location {location_id} does not exist.")
        products = body.get("products")
        lines: list[_OrderLine] = []
        if not isinstance(products, list) or not products:
            need(False, "products", "At least one product is required.")
        else:
            for index, product in enumerate(products):
                path = f"products[{index}]"
                if not isinstance(product, dict):
                    need(False, path, "A product must be an object.")
                    continue
                quantity: Any = product.get("quantity")
                ok_quantity = isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 0
                need(ok_quantity, f"{path}.quantity", "The quantity must be a positive integer.")
                inventory_id = self._resolve_product(product, path, need)
                if inventory_id is not None and ok_quantity:
                    price = product.get("unit_price")
                    lines.append(
                        _OrderLine(
                            inventory_id=inventory_id,
                            sku=self.items[inventory_id].sku,
                            quantity=quantity,
                            unit_price=float(price) if isinstance(price, int | float) else None,
                            external_line_id=product.get("external_line_id"),
                        )
                    )
        if errors:
            raise problem(400, "One or more validation errors occurred.", errors)
        return lines, location_id

    def _resolve_product(
        self, product: dict[str, Any], path: str, need: Callable[[bool, str, str], None]
    ) -> int | None:
        """Match a line by product id, or by reference_id (SKU), creating the product if it is new."""
        if product.get("id") is not None:
            product_id = product["id"]
            need(product_id in self.items, f"{path}.id", f"Product {product_id} does not exist.")
            return int(product_id) if product_id in self.items else None
        sku = str(product.get("reference_id") or "").strip()
        need(bool(sku), f"{path}.reference_id", "The reference_id field is required.")
        if not sku:
            return None
        if sku in self.by_sku:
            return self.by_sku[sku]
        name = str(product.get("name") or "").strip()
        need(bool(name), f"{path}.name", "The name field is required to create a new product.")
        if not name:
            return None
        # ShipBob creates an unknown product on the fly; it has no stock anywhere yet.
        item = _Item(next(self._inventory_ids), sku, name)
        self.items[item.inventory_id] = item
        self.by_sku[sku] = item.inventory_id
        return item.inventory_id

    def _fulfillable(self, inventory_id: int, location_id: int) -> int:
        cell = self.stock.get((inventory_id, location_id))
        return cell.fulfillable if cell else 0

    def _allocate(self, order: _Order, now: datetime) -> None:
        """Commit stock: one centre that has everything, else split across centres, else Exception."""
        demand: dict[int, int] = {}
        for line in order.lines:
            demand[line.inventory_id] = demand.get(line.inventory_id, 0) + line.quantity
        candidates = [order.location_id] if order.location_id is not None else list(self.locations)
        plan: dict[int, dict[int, int]] | None = None
        for location_id in candidates:
            if all(self._fulfillable(inv, location_id) >= qty for inv, qty in demand.items()):
                plan = {location_id: dict(demand)}
                break
        if plan is None and order.location_id is None:
            plan = self._split(demand)
        if plan is None:
            self._exception(order, demand, candidates, now)
            return
        for location_id, lines in plan.items():
            for inv, qty in lines.items():
                self.stock[(inv, location_id)].committed += qty
            shipment = _Shipment(
                id=next(self._shipment_ids),
                order_id=order.id,
                location_id=location_id,
                lines=lines,
                status="Processing",
                created_at=now,
                committed=True,
            )
            self.shipments[shipment.id] = shipment
            order.shipment_ids.append(shipment.id)

    def _consume(self, order: _Order, reservation: _Reservation, now: datetime) -> None:
        """The order takes over the reservation's committed stock: one shipment per reserved centre."""
        per_location: dict[int, dict[int, int]] = {}
        for inv, location_id, qty in reservation.lines:
            lines = per_location.setdefault(location_id, {})
            lines[inv] = lines.get(inv, 0) + qty
        for location_id, lines in per_location.items():
            # Already committed by the reservation: the shipment owns that commitment now.
            shipment = _Shipment(
                id=next(self._shipment_ids),
                order_id=order.id,
                location_id=location_id,
                lines=lines,
                status="Processing",
                created_at=now,
                committed=True,
            )
            self.shipments[shipment.id] = shipment
            order.shipment_ids.append(shipment.id)
        reservation.status, reservation.consumed_at, reservation.order_id = "Consumed", now, order.id

    def _split(self, demand: dict[int, int]) -> dict[int, dict[int, int]] | None:
        """Take each item from the centres with the most free stock first; None if the network is short."""
        plan: dict[int, dict[int, int]] = {}
        for inv, qty in demand.items():
            left = qty
            for location_id in sorted(self.locations, key=lambda loc: (-self._fulfillable(inv, loc), loc)):
                take = min(left, self._fulfillable(inv, location_id))
                if take:
                    plan.setdefault(location_id, {})[inv] = take
                    left -= take
            if left:
                return None
        return plan

    def _exception(self, order: _Order, demand: dict[int, int], candidates: list[int], now: datetime) -> None:
        """Not enough stock: one shipment in Exception, nothing committed, a detail per short item."""
        location_id = candidates[0]
        details: list[dict[str, Any]] = []
        for inv, qty in demand.items():
            available = sum(self._fulfillable(inv, loc) for loc in candidates)
            if available < qty:
                sku = self.items[inv].sku
                message = f"Out of stock: {sku} needs {qty}, {available} fulfillable."
                details.append(
                    {
                        "id": len(details) + 1,
                        "name": "OutOfStock",
                        "description": message,
                        "inventory_id": inv,
                        "exception_fulfillment_center_id": location_id,
                        "extra_information": {"validation_messages": [message]},
                    }
                )
        shipment = _Shipment(
            id=next(self._shipment_ids),
            order_id=order.id,
            location_id=location_id,
            lines=dict(demand),
            status="Exception",
            created_at=now,
            committed=False,
            status_details=details,
        )
        self.shipments[shipment.id] = shipment
        order.shipment_ids.append(shipment.id)

    def _list_orders(self, request: Request, _body: Any) -> tuple[int, Any]:
        params = request.query_params
        orders = list(self.orders.values())
        ids = _csv(params.getlist("IDs"))
        if ids:
            orders = [o for o in orders if str(o.id) in ids]
        references = _csv(params.getlist("ReferenceIds"))
        if references:
            orders = [o for o in orders if o.reference_id in references]
        has_tracking = params.get("HasTracking")
        if has_tracking is not None:
            wanted = has_tracking.lower() == "true"
            orders = [o for o in orders if any(s.tracking for s in self._shipments_of(o)) == wanted]
        if params.get("SortOrder", "Newest").lower() == "newest":
            orders.reverse()
        page = _int_param(params.get("Page"), 1, "Page")
        limit = min(_int_param(params.get("Limit"), 50, "Limit"), 250)
        total_pages = max(1, math.ceil(len(orders) / limit))
        chunk = orders[(page - 1) * limit : page * limit]
        raise _Reply(
            200,
            [self._order_view(o) for o in chunk],
            {
                # Modelled on ShipBob's paging headers for list endpoints.
                "page-number": str(page),
                "total-pages": str(total_pages),
                "total-count": str(len(orders)),
                **({"next-page": str(request.url.include_query_params(Page=page + 1))} if page < total_pages else {}),
            },
        )

    def _get_order(self, request: Request, _body: Any) -> tuple[int, Any]:
        return 200, self._order_view(self._order(request))

    def _get_order_shipments(self, request: Request, _body: Any) -> tuple[int, Any]:
        return 200, [self._shipment_view(s) for s in self._shipments_of(self._order(request))]

    def _cancel_order(self, request: Request, _body: Any) -> tuple[int, Any]:
        order = self._order(request)
        now = self.ctx.clock.now()
        results: list[dict[str, Any]] = []
        for shipment in self._shipments_of(order):
            result: dict[str, Any] = {"shipment_id": shipment.id, "action": "Cancel", "is_success": False}
            if shipment.status in CANCELLABLE:
                self._release(shipment)
                shipment.status = "Cancelled"
                shipment.updated_at = now
                result.update(is_success=True, reason=None)
                self._emit_shipment("order.shipment.cancelled", order, shipment)
            elif shipment.status == "Cancelled":
                result["reason"] = "Shipment is already cancelled."
            else:
                result["reason"] = f"Shipment is {shipment.status}: a label exists, so it can no longer be cancelled."
            results.append(result)
        succeeded = sum(1 for r in results if r["is_success"])
        status = "Success" if succeeded == len(results) else "PartialSuccess" if succeeded else "Failure"
        return 200, {
            "order_id": order.id,
            "status": status,
            "order": self._order_view(order),
            "canceled_shipment_results": results,
        }

    def _shipment(self, request: Request) -> _Shipment:
        shipment = self.shipments.get(_to_int(request.path_params["shipment_id"]))
        if shipment is None:
            raise problem(404, f"Shipment {request.path_params['shipment_id']} was not found.")
        return shipment

    def _cancel_shipment(self, request: Request, _body: Any) -> tuple[int, Any]:
        """Cancel one shipment of an order; refused once it is picked, packed or labelled."""
        shipment = self._shipment(request)
        if shipment.status == "Cancelled":
            return 200, self._shipment_view(shipment)
        if shipment.status not in CANCELLABLE:
            reason = f"Shipment {shipment.id} is {shipment.status} and cannot be cancelled."
            raise _Reply(422, {"shipment_id": [reason]})
        self._release(shipment)
        shipment.status, shipment.updated_at = "Cancelled", self.ctx.clock.now()
        self._emit_shipment("order.shipment.cancelled", self.orders[shipment.order_id], shipment)
        return 200, self._shipment_view(shipment)

    def _line_items_view(self, shipment: _Shipment) -> list[dict[str, Any]]:
        return [
            {
                "id": shipment.id * 100 + index,
                "inventory_id": inv,
                "quantity": qty,
                "committed_quantity": qty if shipment.committed else 0,
                "fulfillment_center_id": shipment.location_id,
                "is_hazmat": False,
                "is_lot": False,
                "product_variant": {"sku": self.items[inv].sku, "name": self.items[inv].name},
                "serial_numbers": [],
            }
            for index, (inv, qty) in enumerate(shipment.lines.items(), start=1)
        ]

    def _get_line_items(self, request: Request, _body: Any) -> tuple[int, Any]:
        return 200, self._line_items_view(self._shipment(request))

    def _update_line_items(self, request: Request, body: Any) -> tuple[int, Any]:
        """Replace a shipment's line items with the complete list sent (`:updateLineItems`).

        Modelled narrowly: quantities may only go down and items may be left out (removed), which
        is what cutting an unshipped remainder needs; adding units would need new stock committed.
        An empty list is refused: cancel the shipment instead.
        """
        shipment = self._shipment(request)
        if shipment.status not in CANCELLABLE:
            raise problem(400, f"Shipment {shipment.id} is {shipment.status}; its line items can no longer change.")
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise problem(400, "items must list every line item of the shipment.", {"items": ["Required."]})
        wanted: dict[int, int] = {}
        errors: dict[str, list[str]] = {}
        for index, entry in enumerate(items):
            entry = entry if isinstance(entry, dict) else {}
            inv, qty = _to_int(entry.get("inventory_id")), entry.get("quantity")
            if inv not in shipment.lines:
                missing = f"Inventory {entry.get('inventory_id')} is not on the shipment."
                errors[f"items[{index}].inventory_id"] = [missing]
            elif not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= shipment.lines[inv]:
                errors[f"items[{index}].quantity"] = [f"The quantity must be 1..{shipment.lines[inv]}."]
            else:
                wanted[inv] = wanted.get(inv, 0) + qty
        if errors:
            raise problem(400, "One or more validation errors occurred.", errors)
        changes: list[dict[str, Any]] = []
        for inv, before in list(shipment.lines.items()):
            after = wanted.get(inv, 0)
            if after == before:
                continue
            if shipment.committed:
                cell = self.stock[(inv, shipment.location_id)]
                cell.committed = max(0, cell.committed - (before - after))
            changes.append({"action": "Removed" if after == 0 else "Updated", "inventory_id": inv,
                            "previous_value": str(before), "new_value": str(after)})  # fmt: skip
            if after:
                shipment.lines[inv] = after
            else:
                del shipment.lines[inv]
        if changes:
            shipment.updated_at = self.ctx.clock.now()
        return 200, {"id": shipment.id, "is_success": True, "shipment_line_items": changes}

    def _release(self, shipment: _Shipment) -> None:
        if shipment.committed:
            for inv, qty in shipment.lines.items():
                cell = self.stock[(inv, shipment.location_id)]
                cell.committed = max(0, cell.committed - qty)
            shipment.committed = False

    # ------------------------------------------------------------------ fulfilment engine

    async def tick(self, now: datetime) -> None:
        """Ship what demo mode says is due, complete labelled parcels, deliver them, run simulations."""
        ship_after = self.ctx.config.demo.wms_ship_after_seconds
        for shipment in list(self.shipments.values()):
            order = self.orders[shipment.order_id]
            demo_due = ship_after is not None and now >= order.created_at + timedelta(seconds=ship_after)
            if shipment.status == "Processing" and demo_due:
                self._label(shipment, now)
            labelled_at = shipment.labelled_at
            if labelled_at is None:
                continue
            if shipment.status == "LabeledCreated" and now >= labelled_at + timedelta(seconds=COMPLETE_AFTER_SECONDS):
                shipment.status, shipment.completed_at, shipment.updated_at = "Completed", now, now
            if shipment.delivered_at is None and now >= labelled_at + timedelta(seconds=DELIVER_AFTER_SECONDS):
                self._deliver(shipment, now)
        due = [step for step in self.scheduled if step.due_at <= now]
        self.scheduled = [step for step in self.scheduled if step.due_at > now]
        for step in due:
            self._run_simulation(self.shipments[step.shipment_id], step.action, step.then, now)
        receive_after = self.ctx.config.demo.wms_return_receive_after_seconds
        if receive_after is not None:
            for ret in list(self.returns.values()):
                if ret.status == "Awaiting Arrival" and now >= ret.created_at + timedelta(seconds=receive_after):
                    self._receive(ret, self._inspect(ret))

    def _inspect(self, ret: _Return) -> list[dict[str, Any]]:
        """Demo mode: what the warehouse finds in the box, each unit damaged with the configured chance."""
        share = self.ctx.config.demo.wms_return_damaged_share
        actions: list[dict[str, Any]] = []
        for line in ret.lines:
            damaged = sum(1 for _ in range(line.quantity) if self.ctx.random.random() < share)
            if line.quantity - damaged:
                actions.append({"inventory_id": line.inventory_id, "action": "Restock",
                                "quantity": line.quantity - damaged, "reason": None})  # fmt: skip
            if damaged:
                actions.append({"inventory_id": line.inventory_id, "action": "Dispose", "quantity": damaged,
                                "reason": "Damaged"})  # fmt: skip
        return actions

    def _label(self, shipment: _Shipment, now: datetime) -> None:
        """Buy the label: tracking is set, the units leave the shelf, `order.shipped` fires."""
        order = self.orders[shipment.order_id]
        carrier, service, url = CARRIER_SERVICES.get(order.shipping_method.lower(), CARRIER_SERVICES["standard"])
        number = "".join(self.ctx.random.choices(string.digits, k=22))
        tracking_url = url.format(number)
        tags = {tag["name"]: tag["value"] for tag in order.tags}
        # The merchant's own label ships the order's first parcel; a split order's other centres
        # buy their own, as ShipBob does for every order.
        if tags.get("label_tracking_number") and order.shipment_ids and shipment.id == order.shipment_ids[0]:
            number = tags["label_tracking_number"]
            carrier = tags.get("label_carrier") or carrier
            service = tags.get("label_service") or service
            tracking_url = tags.get("label_tracking_url") or tracking_url
        shipment.tracking = {
            "carrier": carrier,
            "carrier_service": service,
            "tracking_number": number,
            "tracking_url": tracking_url,
            "shipping_date": _iso(now),
            "bol": None,
            "pro_number": None,
            "scac": None,
        }
        for inv, qty in shipment.lines.items():
            cell = self.stock[(inv, shipment.location_id)]
            cell.on_hand = max(0, cell.on_hand - qty)
            cell.committed = max(0, cell.committed - qty)
        shipment.committed = False
        shipment.status, shipment.labelled_at, shipment.updated_at = "LabeledCreated", now, now
        self._emit_shipment("order.shipped", order, shipment)

    def _deliver(self, shipment: _Shipment, now: datetime) -> None:
        shipment.status = "Completed"
        shipment.completed_at = shipment.completed_at or now
        shipment.delivered_at = shipment.updated_at = now
        self._emit_shipment("order.shipment.delivered", self.orders[shipment.order_id], shipment)

    def _simulate_shipment(self, request: Request, body: Any) -> tuple[int, Any]:
        """ShipBob's sandbox `simulate/shipment`; `order_id` instead of `shipment_id` ships a whole order."""
        if not isinstance(body, dict) or not isinstance(body.get("simulation"), dict):
            raise problem(400, "shipment_id and simulation are required.", {"simulation": ["Required."]})
        if body.get("order_id") is not None:
            order = self.orders.get(_to_int(body["order_id"]))
            if order is None:
                raise problem(404, f"Order {body['order_id']} was not found.")
            targets = [s for s in self._shipments_of(order) if s.status not in ("Cancelled", "Exception")]
        else:
            shipment = self.shipments.get(_to_int(body.get("shipment_id")))
            if shipment is None:
                raise problem(404, f"Shipment {body.get('shipment_id')} was not found.")
            targets = [shipment]
        now = self.ctx.clock.now()
        for shipment in targets:
            self._schedule(shipment, body["simulation"], now)
        simulation_id = f"sim-{next(self._simulation_ids):06d}"
        return 200, {"message": "Simulation request accepted.", "simulation_id": simulation_id}

    def _schedule(self, shipment: _Shipment, step: dict[str, Any], now: datetime) -> None:
        action = step.get("action")
        if action not in ("ShipOrder", "DeliverOrder"):
            raise problem(400, "Unknown simulation action.", {"simulation.action": ["ShipOrder or DeliverOrder."]})
        if action == "ShipOrder" and shipment.status not in ("Processing", *LABELLED):
            raise problem(422, f"Shipment {shipment.id} is {shipment.status} and cannot be shipped.")
        # `delay` is modelled as minutes of sandbox time.
        delay = step.get("delay") or 0
        then = step.get("next") if isinstance(step.get("next"), dict) else None
        if delay:
            self.scheduled.append(_Scheduled(now + timedelta(minutes=float(delay)), shipment.id, action, then))
        else:
            self._run_simulation(shipment, action, then, now)

    def _run_simulation(self, shipment: _Shipment, action: str, then: dict[str, Any] | None, now: datetime) -> None:
        if action == "ShipOrder" and shipment.status == "Processing":
            self._label(shipment, now)
        elif action == "DeliverOrder" and shipment.status in LABELLED and shipment.delivered_at is None:
            self._deliver(shipment, now)
        if then is not None:
            self._schedule(shipment, then, now)

    def _simulate_rate_limit(self, _request: Request, body: Any) -> tuple[int, Any]:
        """Sandbox only: change the per-minute limit (null restores the configured one) and clear the window."""
        value = body.get("requests_per_minute") if isinstance(body, dict) else None
        if value is not None and (not isinstance(value, int) or value < 1):
            raise problem(400, "requests_per_minute must be a positive integer or null.")
        self.rate_limit_override = value
        self.calls.clear()
        return 200, {"requests_per_minute": self._limit()}

    # ------------------------------------------------------------------ inventory

    def _inventory_locations(self, request: Request, _body: Any) -> tuple[int, Any]:
        params = request.query_params
        items = sorted(self.items.values(), key=lambda i: i.inventory_id)
        wanted = _csv(params.getlist("InventoryIds"))
        if wanted:
            items = [i for i in items if str(i.inventory_id) in wanted]
        search = (params.get("SearchBy") or "").strip().lower()
        if search:
            items = [i for i in items if search in i.sku.lower() or search in i.name.lower()]
        location_id = _int_param(params.get("LocationId"), 0, "LocationId") or None
        views = [self._item_view(i, location_id) for i in items]
        if location_id is not None:
            views = [v for v in views if v["locations"]]
        size = min(_int_param(params.get("PageSize"), 50, "PageSize"), 250)
        page = _int_param(params.get("Page"), 1, "Page")
        last = max(1, math.ceil(len(views) / size))

        def link(number: int) -> str:
            return str(request.url.include_query_params(Page=number, PageSize=size))

        return 200, {
            "items": views[(page - 1) * size : page * size],
            "first": link(1),
            "last": link(last),
            "next": link(page + 1) if page < last else None,
            "prev": link(page - 1) if page > 1 else None,
        }

    def _inventory_item(self, request: Request, _body: Any) -> tuple[int, Any]:
        item = self.items.get(_to_int(request.path_params["inventory_id"]))
        if item is None:
            raise problem(404, f"Inventory {request.path_params['inventory_id']} was not found.")
        return 200, self._item_view(item)

    def _list_locations(self, _request: Request, _body: Any) -> tuple[int, Any]:
        return 200, [self._location_detail(w) for w in WAREHOUSES if w.wms_location_id in self.locations]

    @staticmethod
    def _location_detail(warehouse: Warehouse) -> dict[str, Any]:
        """`Locations.LocationViewModel`: the centre with its receiving and returns addresses."""
        address = {
            "name": f"ShipBob {warehouse.name}",
            "address1": warehouse.street1,
            "address2": None,
            "city": warehouse.city,
            "state": warehouse.state,
            "zip_code": warehouse.zip,
            "country": warehouse.country,
            "phone_number": None,
            "email": None,
        }
        return {
            "id": warehouse.wms_location_id,
            "name": warehouse.name,
            "abbreviation": None,
            "is_active": True,
            "is_receiving_enabled": True,
            "is_shipping_enabled": True,
            "access_granted": True,
            "timezone": TIMEZONES.get(warehouse.state),
            "region": {"id": 1, "name": "United States"},
            "attributes": [],
            "services": [
                {"service_type": service, "enabled": True, "address": dict(address)}
                for service in ("Receiving", "Returns")
            ],
        }

    # ------------------------------------------------------------------ inventory reservations (extension)

    def _reservation(self, request: Request) -> _Reservation:
        reservation = self.reservations.get(_to_int(request.path_params["reservation_id"]))
        if reservation is None:
            raise problem(404, f"Inventory reservation {request.path_params['reservation_id']} was not found.")
        return reservation

    def _live_reservation(self, reference_id: str) -> _Reservation | None:
        return next(
            (r for r in self.reservations.values() if r.reference_id == reference_id and r.status == "Active"), None
        )

    def _validate_reservation(self, body: Any) -> tuple[str, list[tuple[int, int, int | None, int]]]:
        """The reference and the wanted lines: (item index, inventory id, location id or None, quantity)."""
        if not isinstance(body, dict):
            raise problem(400, "A request body is required.", {"$": ["A non-empty request body is required."]})
        errors: dict[str, list[str]] = {}
        reference_id = body.get("reference_id")
        if not isinstance(reference_id, str) or not reference_id.strip():
            errors["reference_id"] = ["The reference_id field is required."]
        wanted: list[tuple[int, int, int | None, int]] = []
        items = body.get("items")
        if not isinstance(items, list) or not items:
            errors["items"] = ["At least one item is required."]
            items = []
        for index, entry in enumerate(items):
            path = f"items[{index}]"
            entry = entry if isinstance(entry, dict) else {}
            if entry.get("inventory_id") is not None:
                inv = _to_int(entry["inventory_id"])
                if inv not in self.items:
                    errors[f"{path}.inventory_id"] = [f"Inventory {entry['inventory_id']} does not exist."]
            else:
                inv = self.by_sku.get(str(entry.get("sku") or "").strip(), 0)
                if not inv:
                    errors[f"{path}.sku"] = [f"No inventory item has SKU {entry.get('sku')!r}."]
            quantity: Any = entry.get("quantity")
            if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
                errors[f"{path}.quantity"] = ["The quantity must be a positive integer."]
            location: Any = entry.get("location_id")
            if location is not None and location not in self.locations:
                errors[f"{path}.location_id"] = [f"Location {location} does not exist."]
            if not any(key.startswith(path) for key in errors):
                wanted.append((index, inv, location, quantity))
        if errors:
            raise problem(400, "One or more validation errors occurred.", errors)
        assert isinstance(reference_id, str)
        return reference_id.strip(), wanted

    def _plan_reservation(self, wanted: list[tuple[int, int, int | None, int]]) -> list[tuple[int, int, int]]:
        """All or nothing: placed lines where asked, the rest in one centre if one has it all, else split."""
        available = {(inv, loc): self._fulfillable(inv, loc) for _, inv, _, _ in wanted for loc in self.locations}
        plan: dict[tuple[int, int], int] = {}
        short: list[tuple[int, int, int | None, int, int]] = []  # index, inventory, location, wanted, free

        def take(inv: int, loc: int, qty: int) -> None:
            available[(inv, loc)] -= qty
            plan[(inv, loc)] = plan.get((inv, loc), 0) + qty

        for index, inv, loc, qty in wanted:
            if loc is None:
                continue
            if available[(inv, loc)] < qty:
                short.append((index, inv, loc, qty, available[(inv, loc)]))
            else:
                take(inv, loc, qty)
        free = [(index, inv, qty) for index, inv, loc, qty in wanted if loc is None]
        demand: dict[int, int] = {}
        for _, inv, qty in free:
            demand[inv] = demand.get(inv, 0) + qty
        single = next(
            (loc for loc in sorted(self.locations) if all(available[(i, loc)] >= q for i, q in demand.items())), None
        )
        for index, inv, qty in free:
            if single is not None:
                take(inv, single, qty)
                continue
            left = qty
            for loc in sorted(self.locations, key=lambda loc: (-available[(inv, loc)], loc)):
                step = min(left, available[(inv, loc)])
                if step > 0:
                    take(inv, loc, step)
                    left -= step
            if left:
                short.append((index, inv, None, qty, qty - left))
        if short:
            raise self._insufficient(short)
        return [(inv, loc, qty) for (inv, loc), qty in plan.items() if qty > 0]

    def _insufficient(self, short: list[tuple[int, int, int | None, int, int]]) -> _Reply:
        """A 422 naming every short SKU: nothing was reserved."""
        errors: dict[str, list[str]] = {}
        items: list[dict[str, Any]] = []
        for index, inv, loc, qty, free in short:
            sku = self.items[inv].sku
            where = f"at location {loc}" if loc is not None else "across the network"
            errors[f"items[{index}].quantity"] = [f"{sku}: {qty} requested, {free} fulfillable {where}."]
            items.append({"sku": sku, "inventory_id": inv, "location_id": loc, "requested": qty, "fulfillable": free})
        skus = ", ".join(sorted({item["sku"] for item in items}))
        reply = problem(422, f"Not enough fulfillable stock for {skus}; nothing was reserved.", errors,
                        title="Insufficient stock.")  # fmt: skip
        reply.payload["short_items"] = items
        return reply

    def _create_reservation(self, _request: Request, body: Any) -> tuple[int, Any]:
        reference_id, wanted = self._validate_reservation(body)
        existing = next((r for r in self.reservations.values() if r.reference_id == reference_id), None)
        if existing is not None:
            # Idempotent on reference_id, whatever the reservation became: a late retry must not
            # reserve again after the stock was released or taken by the order.
            return 200, self._reservation_view(existing)
        lines = self._plan_reservation(wanted)
        for inv, loc, qty in lines:
            self.stock[(inv, loc)].committed += qty
        reservation = _Reservation(
            id=next(self._reservation_ids), reference_id=reference_id, lines=lines, created_at=self.ctx.clock.now()
        )
        self.reservations[reservation.id] = reservation
        return 201, self._reservation_view(reservation)

    def _list_reservations(self, request: Request, _body: Any) -> tuple[int, Any]:
        params = request.query_params
        found = list(self.reservations.values())
        ids = _csv(params.getlist("Ids"))
        if ids:
            found = [r for r in found if str(r.id) in ids]
        references = _csv(params.getlist("ReferenceIds"))
        if references:
            found = [r for r in found if r.reference_id in references]
        statuses = {s.lower() for s in _csv(params.getlist("Status"))}
        if statuses:
            found = [r for r in found if r.status.lower() in statuses]
        return 200, _cursor_page(request, [self._reservation_view(r) for r in found])

    def _get_reservation(self, request: Request, _body: Any) -> tuple[int, Any]:
        return 200, self._reservation_view(self._reservation(request))

    def _release_reservation(self, request: Request, _body: Any) -> tuple[int, Any]:
        """Give the stock back; releasing twice is a no-op, and a consumed reservation belongs to its order."""
        reservation = self._reservation(request)
        if reservation.status == "Active":
            for inv, loc, qty in reservation.lines:
                cell = self.stock[(inv, loc)]
                cell.committed = max(0, cell.committed - qty)
            reservation.status, reservation.released_at = "Released", self.ctx.clock.now()
        return 200, self._reservation_view(reservation)

    def _check_reservation_matches(self, reservation: _Reservation, lines: list[_OrderLine]) -> None:
        """An order consumes a reservation only for exactly the units reserved."""
        ordered: dict[int, int] = {}
        for line in lines:
            ordered[line.inventory_id] = ordered.get(line.inventory_id, 0) + line.quantity
        reserved: dict[int, int] = {}
        for inv, _, qty in reservation.lines:
            reserved[inv] = reserved.get(inv, 0) + qty
        if ordered != reserved:
            differ = sorted(
                self.items[i].sku for i in set(ordered) | set(reserved) if ordered.get(i) != reserved.get(i)
            )
            raise problem(
                422,
                f"The products do not match inventory reservation {reservation.id} "
                f"for reference_id {reservation.reference_id}: {', '.join(differ)} differ.",
                {"products": [f"Order exactly the reserved units of {', '.join(differ)}, or release the reservation."]},
            )

    def _reservation_view(self, reservation: _Reservation) -> dict[str, Any]:
        return {
            "id": reservation.id,
            "reference_id": reservation.reference_id,
            "status": reservation.status,
            "created_date": _iso(reservation.created_at),
            "released_date": _iso(reservation.released_at),
            "consumed_date": _iso(reservation.consumed_at),
            "order_id": reservation.order_id,
            "channel": {"id": self.ctx.config.wms_channel_id, "name": "orderflow"},
            "items": [
                {
                    "inventory_id": inv,
                    "sku": self.items[inv].sku,
                    "name": self.items[inv].name,
                    "location_id": loc,
                    "location_name": self.locations.get(loc),
                    "quantity": qty,
                }
                for inv, loc, qty in reservation.lines
            ],
        }

    # ------------------------------------------------------------------ returns

    def _return(self, request: Request) -> _Return:
        ret = self.returns.get(_to_int(request.path_params["return_id"]))
        if ret is None:
            raise problem(404, f"Return {request.path_params['return_id']} was not found.")
        return ret

    def _validate_return(self, body: Any, *, current: _Return | None = None) -> tuple[str, int, list[_ReturnLine]]:
        errors: dict[str, list[str]] = {}
        if not isinstance(body, dict):
            raise problem(400, "A request body is required.", {"$": ["A non-empty request body is required."]})
        reference_id = str(body.get("reference_id") or "").strip()
        if not reference_id:
            errors["reference_id"] = ["The reference_id field is required."]
        centre = body.get("fulfillment_center")
        location_id = _to_int(centre.get("id")) if isinstance(centre, dict) else 0
        if location_id not in self.locations:
            errors["fulfillment_center.id"] = ["A known fulfillment center id is required."]
        lines: list[_ReturnLine] = []
        inventory = body.get("inventory")
        if not isinstance(inventory, list) or not inventory:
            errors["inventory"] = ["At least one inventory item is required."]
        else:
            for index, entry in enumerate(inventory):
                entry = entry if isinstance(entry, dict) else {}
                inv, qty, action = _to_int(entry.get("id")), entry.get("quantity"), entry.get("requested_action")
                if inv not in self.items:
                    errors[f"inventory[{index}].id"] = [f"Inventory {entry.get('id')} does not exist."]
                if not isinstance(qty, int) or qty < 1:
                    errors[f"inventory[{index}].quantity"] = ["The quantity must be a positive integer."]
                if action not in RETURN_ACTIONS:
                    errors[f"inventory[{index}].requested_action"] = [f"Must be one of {RETURN_ACTIONS}."]
                if f"inventory[{index}].id" not in errors and isinstance(qty, int) and qty > 0:
                    lines.append(_ReturnLine(inv, qty, str(action)))
        if errors:
            raise problem(400, "One or more validation errors occurred.", errors)
        shipment_id = body.get("original_shipment_id")
        if shipment_id is not None and _to_int(shipment_id) not in self.shipments:
            raise _Reply(422, _api_error(f"Original shipment {shipment_id} does not exist."))
        clash = [r for r in self.returns.values() if r.reference_id == reference_id and r is not current]
        if clash:
            raise _Reply(422, _api_error(f"A return with reference_id {reference_id} already exists."))
        return reference_id, location_id, lines

    def _create_return(self, request: Request, body: Any) -> tuple[int, Any]:
        reference_id, location_id, lines = self._validate_return(body)
        now = self.ctx.clock.now()
        shipment_id = body.get("original_shipment_id")
        ret = _Return(
            id=next(self._return_ids),
            reference_id=reference_id,
            location_id=location_id,
            lines=lines,
            original_shipment_id=_to_int(shipment_id) if shipment_id is not None else None,
            tracking_number=body.get("tracking_number"),
            status="Awaiting Arrival",
            created_at=now,
            history=[("Awaiting Arrival", now)],
        )
        self.returns[ret.id] = ret
        self._emit("return.created", self._return_view(ret))
        return 201, self._return_view(ret)

    def _list_returns(self, request: Request, _body: Any) -> tuple[int, Any]:
        params = request.query_params
        returns = list(self.returns.values())
        ids = _csv(params.getlist("Ids"))
        if ids:
            returns = [r for r in returns if str(r.id) in ids]
        references = _csv(params.getlist("ReferenceIds"))
        if references:
            returns = [r for r in returns if r.reference_id in references]
        statuses = {s.replace(" ", "").lower() for s in _csv(params.getlist("Status"))}
        if statuses:
            returns = [r for r in returns if r.status.replace(" ", "").lower() in statuses]
        return 200, _cursor_page(request, [self._return_view(r) for r in returns])

    def _get_return(self, request: Request, _body: Any) -> tuple[int, Any]:
        return 200, self._return_view(self._return(request))

    def _update_return(self, request: Request, body: Any) -> tuple[int, Any]:
        ret = self._return(request)
        if ret.status != "Awaiting Arrival":
            raise _Reply(422, _api_error(f"Return {ret.id} is {ret.status} and can no longer be changed."))
        ret.reference_id, ret.location_id, ret.lines = self._validate_return(body, current=ret)
        if "tracking_number" in body:
            ret.tracking_number = body.get("tracking_number")
        self._emit("return.updated", self._return_view(ret))
        return 200, self._return_view(ret)

    def _cancel_return(self, request: Request, _body: Any) -> tuple[int, Any]:
        ret = self._return(request)
        if ret.status == "Cancelled":
            return 200, self._return_view(ret)
        if ret.status != "Awaiting Arrival":
            raise problem(400, f"Return {ret.id} is {ret.status}; only a return awaiting arrival can be cancelled.")
        self._move_return(ret, "Cancelled", "return.updated")
        return 200, self._return_view(ret)

    def _move_return(self, ret: _Return, status: str, topic: str) -> None:
        ret.status = status
        ret.history.append((status, self.ctx.clock.now()))
        self._emit(topic, self._return_view(ret))

    def _simulate_return(self, _request: Request, body: Any) -> tuple[int, Any]:
        """Sandbox only: the warehouse receives a return, step by step up to `to` (default Completed).

        `actions` ([{inventory_id, action, quantity, reason}]) says what was done with the units;
        a line without any gets its requested action (Default means Restock), and a line whose
        actions cover fewer units than it holds had the rest missing from the box.
        """
        if not isinstance(body, dict):
            raise problem(400, "return_id is required.", {"return_id": ["Required."]})
        ret = self.returns.get(_to_int(body.get("return_id")))
        if ret is None:
            raise problem(404, f"Return {body.get('return_id')} was not found.")
        stages = ["Awaiting Arrival", "Arrived", "Processing", "Completed"]
        target = body.get("to") or "Completed"
        if target not in stages[1:]:
            raise problem(400, "to must be Arrived, Processing or Completed.", {"to": ["Invalid stage."]})
        if ret.status not in stages:
            raise problem(422, f"Return {ret.id} is {ret.status}.")
        self._receive(ret, body.get("actions") or [], to=target)
        return 200, self._return_view(ret)

    def _receive(self, ret: _Return, actions: list[dict[str, Any]], *, to: str = "Completed") -> None:
        """The warehouse takes a return in, stage by stage up to `to`; completing it dispositions the units."""
        stages = ["Awaiting Arrival", "Arrived", "Processing", "Completed"]
        for stage in stages[stages.index(ret.status) + 1 : stages.index(to) + 1]:
            if stage == "Completed":
                self._apply_return_actions(ret, actions)
                self._move_return(ret, stage, "return.completed")
            else:
                self._move_return(ret, stage, "return.updated")

    def _apply_return_actions(self, ret: _Return, actions: list[dict[str, Any]]) -> None:
        for line in ret.lines:
            chosen = [a for a in actions if isinstance(a, dict) and _to_int(a.get("inventory_id")) == line.inventory_id]
            if not chosen:
                chosen = [{"action": line.requested_action, "quantity": line.quantity, "reason": None}]
            processed = 0
            for action in chosen:
                name = "Restock" if action.get("action") in (None, "Default") else str(action["action"])
                # A unit is dispositioned once: actions beyond the line's quantity find nothing left.
                quantity = min(_to_int(action.get("quantity")) or line.quantity, line.quantity - processed)
                if quantity <= 0:
                    continue
                processed += quantity
                line.action_taken.append(
                    {"action": name, "action_reason": action.get("reason"), "quantity_processed": quantity}
                )
                if name == "Restock":
                    cell = self.stock.setdefault((line.inventory_id, ret.location_id), _Cell(on_hand=0))
                    cell.on_hand += quantity

    def _return_view(self, ret: _Return) -> dict[str, Any]:
        shipment = self.shipments.get(ret.original_shipment_id or 0)
        order = self.orders.get(shipment.order_id) if shipment else None
        return {
            "id": ret.id,
            "reference_id": ret.reference_id,
            "status": ret.status,
            "return_type": "Regular",
            "insert_date": _iso(ret.created_at),
            "awaiting_arrival_date": _iso(ret.date_of("Awaiting Arrival")),
            "arrived_date": _iso(ret.date_of("Arrived")),
            "processing_date": _iso(ret.date_of("Processing")),
            "completed_date": _iso(ret.date_of("Completed")),
            "cancelled_date": _iso(ret.date_of("Cancelled")),
            "status_history": [{"status": name, "timestamp": _iso(at)} for name, at in ret.history],
            "channel": {"id": self.ctx.config.wms_channel_id, "name": "orderflow"},
            "fulfillment_center": self._location_view(ret.location_id),
            "original_shipment_id": ret.original_shipment_id,
            "store_order_id": order.reference_id if order else None,
            "customer_name": order.recipient.get("name") if order else None,
            "tracking_number": ret.tracking_number,
            "shipment_tracking_number": ret.tracking_number,
            "invoice_amount": None,
            "transactions": [],
            "inventory": [
                {
                    "id": line.inventory_id,
                    "name": self.items[line.inventory_id].name,
                    "sku": self.items[line.inventory_id].sku,
                    "quantity": line.quantity,
                    "action_requested": {"action": line.requested_action, "action_type": None, "instructions": None},
                    "action_taken": line.action_taken,
                    "barcodes": [],
                }
                for line in ret.lines
            ],
        }

    # ------------------------------------------------------------------ webhook subscriptions

    def _create_webhook(self, request: Request, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            raise problem(422, "topics and url are required.", {"topics": ["Required."], "url": ["Required."]})
        topics: Any = body.get("topics")
        url: Any = body.get("url")
        secret: Any = body.get("secret")
        errors: dict[str, list[str]] = {}
        known = TOPICS | (TOPICS_2026_07 if request.path_params["version"] >= "2026-07" else frozenset())
        if not isinstance(topics, list) or not topics or any(t not in known for t in topics):
            errors["topics"] = [f"Topics must be a non-empty list of: {', '.join(sorted(known))}."]
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            errors["url"] = ["A valid absolute URL is required."]
        if secret is not None and not _valid_secret(secret):
            errors["secret"] = ["The secret must be whsec_ followed by base64."]
        if errors:
            raise problem(422, "The subscription is invalid.", errors)
        if secret is None:
            secret = "whsec_" + base64.b64encode(self.ctx.random.randbytes(24)).decode()
        created_at = _iso(self.ctx.clock.now())
        sub = self.ctx.outbox.subscribe(
            self.name,
            list(topics),
            url,
            secret=secret,
            extra={"created_at": created_at, "description": body.get("description")},
        )
        return 200, {"id": sub.id, "topics": sub.topics, "url": sub.url, "secret": secret, "created_at": created_at}

    def _list_webhooks(self, _request: Request, _body: Any) -> tuple[int, Any]:
        subs = [s for s in self.ctx.outbox.subscriptions_of(self.name) if not s.deleted]
        items = [
            {
                "id": s.id,
                "topics": s.topics,
                "url": s.url,
                "created_at": s.extra.get("created_at") or _iso(self.ctx.clock.now()),
                "enabled": s.active,
            }
            for s in subs
        ]
        return 200, {"items": items, "next": None, "prev": None}

    def _delete_webhook(self, request: Request, _body: Any) -> tuple[int, Any]:
        sid = request.path_params["subscription_id"]
        sub = self.ctx.outbox.subscriptions.get(sid)
        if sub is None or sub.system != self.name:
            raise problem(404, f"Webhook subscription {sid} was not found.")
        self.ctx.outbox.unsubscribe(sid)
        return 204, None


def _csv(values: list[str]) -> set[str]:
    """Query values given repeated or comma-separated, as ShipBob accepts both."""
    return {part.strip() for value in values for part in value.split(",") if part.strip()}


def _to_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _cursor_page(request: Request, items: list[Any]) -> dict[str, Any]:
    """One page of a cursor-paged list (`Cursor`, `Limit`), with first/last/next/prev links, as ShipBob pages."""
    limit = min(_int_param(request.query_params.get("Limit"), 50, "Limit"), 250)
    start = _int_param(request.query_params.get("Cursor"), 0, "Cursor")

    def link(offset: int) -> str:
        return str(request.url.include_query_params(Cursor=offset, Limit=limit))

    return {
        "items": items[start : start + limit],
        "first": link(0),
        "last": link(max(0, (len(items) - 1) // limit * limit)),
        "next": link(start + limit) if start + limit < len(items) else None,
        "prev": link(max(0, start - limit)) if start else None,
    }


def _int_param(raw: str | None, default: int, name: str) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise problem(400, f"{name} must be an integer.", {name: [f"The value '{raw}' is not valid."]}) from None
    if value < (0 if name in ("Cursor", "LocationId") else 1):
        raise problem(400, f"{name} is out of range.", {name: [f"The value '{raw}' is out of range."]})
    return value


def _valid_secret(secret: Any) -> bool:
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        return False
    try:
        return bool(base64.b64decode(secret.removeprefix("whsec_"), validate=True))
    except ValueError:
        return False


def _api_error(message: str) -> dict[str, Any]:
    """The returns API's 422 body (`Returns.ApiError`)."""
    return {"message": message, "errors": [message], "details": None, "stackTrace": None}

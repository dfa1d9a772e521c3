"""The Shopify simulator: the Admin GraphQL API, client-credentials tokens, the cost bucket, webhooks.

What it models, and where the model comes from (see `docs/adapters/shopify.md` for the list):

- `POST /admin/api/{version}/graphql.json` executes real GraphQL over a subset of the Admin schema
  (`shopify_graphql.py`), after checking `X-Shopify-Access-Token` (401 with Shopify's body).
- `POST /admin/oauth/access_token` issues client-credentials tokens that expire on the sim clock.
- Every response carries `extensions.cost`; a leaky bucket per token refuses with `THROTTLED` when
  empty (HTTP 200 or 429, configurable) and a single query over 1000 points is `MAX_COST_EXCEEDED`.
- Business failures are HTTP 200 with `userErrors`. `orderCancel` returns a `Job` that completes
  on the sim clock, then `orders/cancelled` is emitted.
- `@idempotent(key:)` exists from 2026-01 and is required from 2026-04 on refund and inventory
  mutations; the same key returns the first result.
- Webhooks are REST-shaped, signed with the app's client secret, retried 8 times over about 4 hours
  (compressed), and the subscription is deleted when the retries run out.
- Returns: `returnRequest` (a customer's request, REQUESTED), `returnApproveRequest` (OPEN, with a
  reverse fulfillment order at the location that shipped), `reverseDeliveryCreateWithShipping` (the
  label and tracking the customer gets), `returnClose` and `returnCancel`, each emitting its
  `returns/*` webhook. `refundCreate` emits `refunds/create`.
- Sandbox-only routes under `/sandbox/...` act as a person would: a customer requesting a return,
  staff approving it, staff refunding in Shopify admin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from graphql import (
    GraphQLError,
    GraphQLResolveInfo,
    OperationType,
    execute_sync,
    parse,
    validate,
)
from graphql.execution.values import get_directive_values

from orderflow.sandbox import seed
from orderflow.sandbox.core import SandboxContext, Simulator
from orderflow.sandbox.faults import FaultKind, FaultRule
from orderflow.sandbox.outbox import Delivery, Subscription, SystemWebhookPolicy
from orderflow.sandbox.shopify_graphql import (
    IDEMPOTENT_MUTATIONS,
    MAX_QUERY_COST,
    RATE_LIMITS_DOC,
    CostCalculator,
    connection,
    first_n,
    gid,
    operation_of,
    parse_gid,
    parse_gid_text,
    requires_idempotency,
    schema_for,
    shopify_error,
)

SHOP_DOMAIN = "orderflow-sandbox.myshopify.com"
SHOP_NAME = "orderflow sandbox"
DEFAULT_API_VERSION = "2025-10"
CURRENCY = "USD"
# Shopify REST payloads carry the shop's local offset; the sandbox shop sits in US Central time.
SHOP_TZ = timezone(timedelta(hours=-5))
# Client-credentials tokens last about a day (ShopifySharp release notes; api_facts §1.2).
TOKEN_TTL_SECONDS = 86399
# How long an orderCancel job takes on the sim clock before the order is cancelled (modeled).
CANCEL_JOB_SECONDS = 0.5
# 8 retries over 4 hours with exponential backoff (changelog 2024-09-10); the steps are modeled.
WEBHOOK_RETRY_SCHEDULE = [60.0, 120.0, 300.0, 600.0, 1200.0, 2400.0, 3600.0, 6120.0]
WEBHOOK_TIMEOUT_SECONDS = 5.0
SCOPES = (
    "read_orders,write_orders,read_fulfillments,write_fulfillments,read_inventory,write_inventory,"
    "read_returns,write_returns"
)

INVALID_TOKEN_BODY = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}

TOPICS = {
    "ORDERS_CREATE": "orders/create",
    "ORDERS_CANCELLED": "orders/cancelled",
    "REFUNDS_CREATE": "refunds/create",
    "FULFILLMENTS_CREATE": "fulfillments/create",
    "RETURNS_REQUEST": "returns/request",
    "RETURNS_APPROVE": "returns/approve",
    "RETURNS_CLOSE": "returns/close",
    "RETURNS_CANCEL": "returns/cancel",
}
TOPIC_ENUMS = {topic: enum for enum, topic in TOPICS.items()}
INVENTORY_REASONS = frozenset(
    {
        "correction",
        "cycle_count_available",
        "damaged",
        "movement_created",
        "movement_updated",
        "movement_received",
        "movement_canceled",
        "other",
        "promotion",
        "quality_control",
        "received",
        "reservation_created",
        "reservation_deleted",
        "reservation_updated",
        "restock",
        "safety_stock",
        "shrinkage",
    }
)
CENT = Decimal("0.01")


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _amount(value: Any) -> Decimal:
    """A money amount from a GraphQL input: a decimal string (or a number some clients send)."""
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise GraphQLError(f"Invalid decimal amount: {value!r}") from exc


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _local(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(SHOP_TZ).isoformat(timespec="seconds")


# --- State ------------------------------------------------------------------------------------


@dataclass
class TaxRec:
    """A tax charged on a line or on shipping."""

    title: str
    rate: Decimal
    amount: Decimal


@dataclass
class DiscountAppRec:
    """A discount application on the order (a code or a manual discount)."""

    index: int
    code: str | None
    title: str
    value: Decimal
    value_type: str = "percentage"
    target_type: str = "line_item"
    allocation_method: str = "across"


@dataclass
class LineItemRec:
    """One line of an order."""

    id: int
    sku: str
    name: str
    quantity: int
    price: Decimal
    variant_id: int | None
    product_id: int | None
    inventory_item_id: int | None
    requires_shipping: bool = True
    discount: Decimal = Decimal(0)
    discount_index: int | None = None
    tax_lines: list[TaxRec] = field(default_factory=list)


@dataclass
class ShippingLineRec:
    """The shipping the buyer chose and paid for."""

    id: int
    title: str
    code: str | None
    price: Decimal
    tax_lines: list[TaxRec] = field(default_factory=list)


@dataclass
class FoLineRec:
    """A line of a fulfillment order, with what is left to fulfil."""

    id: int
    line_item_id: int
    total: int
    remaining: int


@dataclass
class FulfillmentOrderRec:
    """The work a location must do for an order: Shopify fulfils per fulfillment order."""

    id: int
    order_id: int
    location_id: int
    status: str
    lines: list[FoLineRec]
    created_at: datetime
    updated_at: datetime


@dataclass
class FulfillmentLineRec:
    """Units of one line item in a fulfillment."""

    id: int
    line_item_id: int
    quantity: int


@dataclass
class FulfillmentRec:
    """A shipment recorded against an order, with its tracking."""

    id: int
    order_id: int
    name: str
    location_id: int
    status: str
    tracking_company: str | None
    tracking_numbers: list[str]
    tracking_urls: list[str]
    lines: list[FulfillmentLineRec]
    created_at: datetime
    notify_customer: bool


@dataclass
class TransactionRec:
    """Money moving on an order: the sale, and any refunds."""

    id: int
    order_id: int
    kind: str
    status: str
    gateway: str
    amount: Decimal
    parent_id: int | None
    created_at: datetime


@dataclass
class RefundLineRec:
    """Units of a line item refunded, and whether they went back on the shelf."""

    id: int
    line_item_id: int
    quantity: int
    restock_type: str
    location_id: int | None
    subtotal: Decimal
    total_tax: Decimal


@dataclass
class RefundRec:
    """A refund on an order."""

    id: int
    order_id: int
    note: str | None
    created_at: datetime
    lines: list[RefundLineRec]
    transactions: list[TransactionRec]
    shipping: Decimal
    restock: bool

    @property
    def total(self) -> Decimal:
        """What went back to the buyer."""
        return sum((t.amount for t in self.transactions), Decimal(0))


@dataclass
class ReturnLineRec:
    """Units of one fulfillment line item the customer sends back, and why."""

    id: int
    fulfillment_line_id: int
    line_item_id: int
    quantity: int
    reason: str  # ReturnReason, upper case
    customer_note: str | None = None
    reason_note: str = ""


@dataclass
class ReverseDeliveryRec:
    """The label and tracking a customer ships a return with."""

    id: int
    tracking_number: str | None
    tracking_url: str | None
    label_url: str | None
    created_at: datetime
    lines: list[tuple[int, int]] = field(default_factory=list)  # (reverse FO line id, quantity)


@dataclass
class ReverseFulfillmentOrderRec:
    """The work of taking a return back in at one location (one per return here)."""

    id: int
    location_id: int
    status: str  # open, closed, canceled
    lines: list[tuple[int, int]]  # (reverse FO line id, return line id)
    deliveries: list[ReverseDeliveryRec] = field(default_factory=list)


@dataclass
class ReturnRec:
    """A return on an order: requested by the customer, approved, then closed or cancelled."""

    id: int
    order_id: int
    name: str
    status: str  # requested, open, closed, canceled, declined
    lines: list[ReturnLineRec]
    created_at: datetime
    closed_at: datetime | None = None
    reverse_orders: list[ReverseFulfillmentOrderRec] = field(default_factory=list)

    @property
    def total_quantity(self) -> int:
        """Units the return covers."""
        return sum(line.quantity for line in self.lines)


@dataclass
class OrderRec:
    """An order as the shop holds it."""

    id: int
    number: int
    email: str | None
    phone: str | None
    note: str | None
    created_at: datetime
    updated_at: datetime
    currency: str
    customer: dict[str, Any] | None
    shipping_address: dict[str, Any] | None
    billing_address: dict[str, Any] | None
    line_items: list[LineItemRec]
    shipping_lines: list[ShippingLineRec]
    discount_apps: list[DiscountAppRec]
    financial_status: str
    tags: list[str] = field(default_factory=list)
    payment_terms: dict[str, Any] | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    closed_at: datetime | None = None
    fulfillment_orders: list[FulfillmentOrderRec] = field(default_factory=list)
    fulfillments: list[FulfillmentRec] = field(default_factory=list)
    refunds: list[RefundRec] = field(default_factory=list)
    transactions: list[TransactionRec] = field(default_factory=list)
    returns: list[ReturnRec] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The order's name as the merchant sees it."""
        return f"#{self.number}"

    @property
    def line_total(self) -> Decimal:
        """Quantity times price over all lines, before discounts."""
        return sum((li.price * li.quantity for li in self.line_items), Decimal(0))

    @property
    def total_discounts(self) -> Decimal:
        """Discounts allocated to lines."""
        return sum((li.discount for li in self.line_items), Decimal(0))

    @property
    def subtotal(self) -> Decimal:
        """Lines after their discounts, before shipping and tax."""
        return self.line_total - self.total_discounts

    @property
    def total_shipping(self) -> Decimal:
        """What the buyer paid for shipping."""
        return sum((s.price for s in self.shipping_lines), Decimal(0))

    @property
    def total_tax(self) -> Decimal:
        """Taxes on lines and on shipping."""
        taxes = [t.amount for li in self.line_items for t in li.tax_lines]
        taxes += [t.amount for s in self.shipping_lines for t in s.tax_lines]
        return sum(taxes, Decimal(0))

    @property
    def total_price(self) -> Decimal:
        """What the buyer was charged."""
        return self.subtotal + self.total_shipping + self.total_tax

    @property
    def total_refunded(self) -> Decimal:
        """Money refunded so far."""
        return sum((r.total for r in self.refunds), Decimal(0))

    def refunded_quantity(self, line_item_id: int) -> int:
        """Units of a line already refunded."""
        return sum(rl.quantity for r in self.refunds for rl in r.lines if rl.line_item_id == line_item_id)

    def fulfilled_quantity(self, line_item_id: int) -> int:
        """Units of a line already fulfilled."""
        return sum(fl.quantity for f in self.fulfillments for fl in f.lines if fl.line_item_id == line_item_id)

    def aggregated_tax_lines(self) -> list[TaxRec]:
        """Order-level tax lines: the line and shipping taxes summed by title and rate."""
        sums: dict[tuple[str, Decimal], Decimal] = {}
        for tax in [t for li in self.line_items for t in li.tax_lines] + [
            t for s in self.shipping_lines for t in s.tax_lines
        ]:
            sums[(tax.title, tax.rate)] = sums.get((tax.title, tax.rate), Decimal(0)) + tax.amount
        return [TaxRec(title, rate, amount) for (title, rate), amount in sums.items()]

    def fulfillment_status(self) -> str | None:
        """REST `fulfillment_status`: null, partial or fulfilled."""
        shippable = sum(li.quantity for li in self.line_items if li.requires_shipping)
        shipped = sum(fl.quantity for f in self.fulfillments for fl in f.lines)
        if shipped == 0:
            return None
        return "fulfilled" if shipped >= shippable else "partial"


@dataclass
class JobRec:
    """An asynchronous job (order cancellation) that finishes on the sim clock."""

    id: str
    order_id: int
    due_at: datetime
    reason: str
    restock: bool
    refund: bool
    notify_customer: bool
    staff_note: str | None
    done: bool = False


@dataclass
class StockRec:
    """Stock of one inventory item at one location."""

    on_hand: int
    committed: int = 0
    updated_at: datetime | None = None

    @property
    def available(self) -> int:
        """What can still be sold."""
        return self.on_hand - self.committed


@dataclass
class BucketRec:
    """A token's leaky bucket of query-cost points."""

    available: float
    updated_at: float


class UserFacingError(Exception):
    """A business failure reported as a userError, never as an HTTP error."""

    def __init__(self, message: str, field_path: list[str] | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field_path
        self.code = code

    def as_dict(self) -> dict[str, Any]:
        """The userError entry."""
        return {"field": self.field, "message": self.message, "code": self.code}


# --- The simulator ----------------------------------------------------------------------------


class ShopifySimulator(Simulator):
    """A Shopify store: Admin GraphQL with its cost limits, client-credentials tokens and webhooks."""

    name = "shopify"
    read_only_posts = ("/admin/oauth/access_token",)

    def __init__(self, ctx: SandboxContext) -> None:
        super().__init__(ctx)
        ctx.outbox.register_system(
            self.name,
            SystemWebhookPolicy(
                retry_schedule=WEBHOOK_RETRY_SCHEDULE,
                timeout_seconds=WEBHOOK_TIMEOUT_SECONDS,
                delete_subscription_when_exhausted=True,
            ),
            self._sign,
        )
        # Real Shopify never reuses an order id, and saga IDs are built from it. The counters
        # survive `reset()`, and start from an offset taken from the clock when the process
        # starts, so a restarted sandbox (while Temporal keeps its sagas on disk) does not hand out
        # an id an older saga still has: ten thousand ids per second of wall time between starts.
        self._next_ids: dict[str, int] = {}
        self._id_offset = max(0, int(ctx.clock.timestamp()) - 1_700_000_000) * 10_000
        self.order_number = 1000
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the seed shop: catalogue stock, a few seeded orders, no tokens, no jobs."""
        self.orders: dict[int, OrderRec] = {}
        self.jobs: dict[str, JobRec] = {}
        self.tokens: dict[str, datetime] = {}
        self.buckets: dict[str, BucketRec] = {}
        self.idempotency: dict[tuple[str, str], dict[str, Any]] = {}
        self.adjustment_groups: list[dict[str, Any]] = []
        self.demo_credit = 0.0
        self.demo_last_tick: datetime | None = None
        now = self.ctx.clock.now()
        self.stock: dict[tuple[int, int], StockRec] = {
            (item.shopify_inventory_item_id, self._location_of_wms(wms_id)): StockRec(on_hand=qty, updated_at=now)
            for item in seed.CATALOG
            for wms_id, qty in item.stock.items()
        }
        # A handful of seeded orders so reads work before anything is created.
        for customer in (seed.CUSTOMERS[0], seed.CUSTOMERS[1], seed.CUSTOMERS[6]):
            self._create_order_from_plan(self._demo_plan(customer), emit=False)

    def snapshot(self) -> dict[str, Any]:
        """Orders (with fulfillments, refunds, cancellation), stock, tokens, subscriptions, jobs."""
        return {
            "shop": SHOP_DOMAIN,
            "orders": [self._snapshot_order(o) for o in self.orders.values()],
            "inventory": [
                {
                    "inventory_item_id": item_id,
                    "sku": self._item_by_inventory_id(item_id).sku,
                    "location_id": location_id,
                    "on_hand": rec.on_hand,
                    "committed": rec.committed,
                    "available": rec.available,
                }
                for (item_id, location_id), rec in sorted(self.stock.items())
            ],
            "tokens": len(self.tokens),
            "jobs": [
                {"id": gid("Job", j.id), "order_id": j.order_id, "done": j.done, "due_at": _iso(j.due_at)}
                for j in self.jobs.values()
            ],
            "subscriptions": [
                {
                    "id": s.id,
                    "topics": s.topics,
                    "url": s.url,
                    "deleted": s.deleted,
                    "active": s.active,
                    "api_version": s.extra.get("api_version"),
                }
                for s in self.ctx.outbox.subscriptions_of(self.name)
            ],
            "idempotency_keys": sorted(f"{m}:{k}" for m, k in self.idempotency),
        }

    def _snapshot_order(self, order: OrderRec) -> dict[str, Any]:
        rest = self._rest_order(order)
        rest["fulfillments"] = [self._rest_fulfillment(order, f) for f in order.fulfillments]
        # The state adds each refund's total ("amount"), which the REST body spreads over transactions.
        rest["refunds"] = [{**self._rest_refund(order, r), "amount": str(_money(r.total))} for r in order.refunds]
        rest["returns"] = [
            {
                **self._rest_return(order, ret),
                "reverse_deliveries": [
                    {"id": d.id, "tracking_number": d.tracking_number, "tracking_url": d.tracking_url,
                     "label_url": d.label_url, "line_items": [{"id": i, "quantity": q} for i, q in d.lines]}
                    for rfo in ret.reverse_orders
                    for d in rfo.deliveries
                ],
            }
            for ret in order.returns
        ]  # fmt: skip
        rest["fulfillment_orders"] = [
            {
                "id": fo.id,
                "status": fo.status.upper(),
                "location_id": fo.location_id,
                "line_items": [
                    {"id": ln.id, "line_item_id": ln.line_item_id, "total": ln.total, "remaining": ln.remaining}
                    for ln in fo.lines
                ],
            }
            for fo in order.fulfillment_orders
        ]
        return rest

    def fault_response(self, kind: FaultKind, rule: FaultRule) -> tuple[int, dict[str, str], bytes]:
        """Injected throttles as a THROTTLED body (200 or 429), errors as Shopify's 5xx body."""
        if kind is FaultKind.THROTTLE:
            restore = self.ctx.config.shopify_restore_rate
            # An empty bucket that needs `retry_after` seconds to hold the query again.
            requested = max(1, round(rule.retry_after * restore))
            status = self.ctx.config.shopify_throttle_status
            body = self._throttled_body(requested, 0.0)
            headers = {"Retry-After": str(rule.retry_after)} if status == 429 else {}
            return status, headers, json.dumps(body).encode()
        if rule.status >= 500:
            request_id = str(uuid.UUID(int=self.ctx.random.getrandbits(128)))
            body = {
                "errors": [
                    {
                        "message": "Internal error. Looks like something went wrong on our end.\n"
                        f"Request ID: {request_id} (include this in support requests).",
                        "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
                    }
                ]
            }
            return rule.status, {"X-Request-Id": request_id}, json.dumps(body).encode()
        phrases = {402: "Unavailable Shop", 403: "Forbidden", 404: "Not Found", 423: "Locked", 429: "Throttled"}
        body_4xx = {"errors": phrases.get(rule.status, "Bad Request")}
        return rule.status, {}, json.dumps(body_4xx).encode()

    async def tick(self, now: datetime) -> None:
        """Finish due cancel jobs, and in demo mode place orders at the configured rate."""
        self._complete_due_jobs()
        rate = self.ctx.config.demo.shopify_orders_per_minute
        if rate <= 0:
            self.demo_last_tick = now
            return
        if self.demo_last_tick is None:
            self.demo_last_tick = now
            return
        elapsed = max(0.0, (now - self.demo_last_tick).total_seconds())
        self.demo_last_tick = now
        self.demo_credit += elapsed * rate / 60.0
        while self.demo_credit >= 1.0:
            self.demo_credit -= 1.0
            customer = self.ctx.random.choice([c for c in seed.CUSTOMERS if c.shopify_customer_id is not None])
            self._create_order_from_plan(self._demo_plan(customer), emit=True)

    # -- ids and lookups ---------------------------------------------------------------------

    _ID_BASES = {
        "order": 6200407294000,
        "line_item": 15518907892000,
        "shipping_line": 4946484101000,
        "fulfillment_order": 7310000000000,
        "fo_line": 16600000000000,
        "fulfillment": 5590000000000,
        "fulfillment_line": 13300000000000,
        "refund": 919000000000,
        "refund_line": 104689000000,
        "transaction": 8010388060000,
        "adjustment_group": 30000000000,
        "webhook_subscription": 1400000000000,
        "return": 3547000000,
        "return_line": 6200500000,
        "reverse_fo": 5160000000,
        "reverse_fo_line": 7730000000,
        "reverse_delivery": 8810000000,
    }

    def _next_id(self, kind: str) -> int:
        n = self._next_ids.get(kind, 0) + 1
        self._next_ids[kind] = n
        return self._ID_BASES[kind] + self._id_offset + n

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.ctx.ids.getrandbits(128), version=4))

    @staticmethod
    def _location_of_wms(wms_location_id: int) -> int:
        return next(w.shopify_location_id for w in seed.WAREHOUSES if w.wms_location_id == wms_location_id)

    @staticmethod
    def _location_name(location_id: int) -> str | None:
        return next((w.name for w in seed.WAREHOUSES if w.shopify_location_id == location_id), None)

    @staticmethod
    def _item_by_inventory_id(inventory_item_id: int) -> seed.CatalogItem:
        return next(i for i in seed.CATALOG if i.shopify_inventory_item_id == inventory_item_id)

    @staticmethod
    def _item_by_variant(variant_id: int) -> seed.CatalogItem | None:
        return next((i for i in seed.CATALOG if i.shopify_variant_id == variant_id), None)

    def _order_of(self, order_id: Any) -> OrderRec | None:
        number = parse_gid(order_id, "Order")
        return self.orders.get(number) if number is not None else None

    # -- auth, cost and the HTTP edge --------------------------------------------------------

    def router(self) -> APIRouter:
        """The Admin API routes: the OAuth token endpoint and the GraphQL endpoint."""
        router = APIRouter()

        @router.post("/admin/oauth/access_token")
        async def access_token(request: Request) -> Response:
            return self._grant_token(await request.body(), request.headers.get("content-type", ""))

        @router.post("/admin/api/{version}/graphql.json")
        async def graphql_endpoint(version: str, request: Request) -> Response:
            return self._graphql_http(
                version,
                request.headers.get("x-shopify-access-token"),
                await request.body(),
                request.headers.get("content-type", ""),
            )

        # Sandbox-only: what people do in Shopify, so tests and the demo can make it happen.
        @router.post("/sandbox/returns/request")
        async def customer_requests_return(request: Request) -> Response:
            body = _json_object(await request.body())
            return self._simulated(lambda: self._simulate_return_request(body))

        @router.post("/sandbox/returns/{return_id}/approve")
        async def staff_approves_return(return_id: str) -> Response:
            return self._simulated(lambda: self._simulate_return_approval(return_id))

        @router.post("/sandbox/refunds")
        async def staff_refunds_in_admin(request: Request) -> Response:
            body = _json_object(await request.body())
            return self._simulated(lambda: self._simulate_admin_refund(body))

        return router

    @staticmethod
    def _simulated(action: Callable[[], dict[str, Any]]) -> Response:
        try:
            return JSONResponse(action(), status_code=201)
        except UserFacingError as error:
            return JSONResponse({"errors": [error.as_dict()]}, status_code=422)

    def _grant_token(self, body: bytes, content_type: str) -> Response:
        try:
            if "json" in content_type:
                raw = json.loads(body or b"{}")
                form = {k: str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
            else:
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        except (ValueError, UnicodeDecodeError):
            form = {}
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"},
                status_code=400,
            )
        config = self.ctx.config
        id_ok = hmac.compare_digest(form.get("client_id", ""), config.shopify_client_id)
        secret_ok = hmac.compare_digest(form.get("client_secret", ""), config.shopify_client_secret)
        if not (id_ok and secret_ok):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client authentication failed"}, status_code=400
            )
        token = f"shpat_{self.ctx.random.getrandbits(128):032x}"
        self.tokens[token] = self.ctx.clock.now() + timedelta(seconds=TOKEN_TTL_SECONDS)
        return JSONResponse({"access_token": token, "scope": SCOPES, "expires_in": TOKEN_TTL_SECONDS})

    def _token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        if hmac.compare_digest(token, self.ctx.config.shopify_access_token):
            return True
        expires_at = self.tokens.get(token)
        return expires_at is not None and self.ctx.clock.now() < expires_at

    def _bucket(self, token: str) -> BucketRec:
        size = self.ctx.config.shopify_bucket_size
        now = self.ctx.clock.timestamp()
        bucket = self.buckets.setdefault(token, BucketRec(available=size, updated_at=now))
        restored = (now - bucket.updated_at) * self.ctx.config.shopify_restore_rate
        bucket.available = min(size, bucket.available + max(0.0, restored))
        bucket.updated_at = now
        return bucket

    def _throttle_status(self, available: float) -> dict[str, Any]:
        return {
            "maximumAvailable": float(self.ctx.config.shopify_bucket_size),
            "currentlyAvailable": int(available),
            "restoreRate": float(self.ctx.config.shopify_restore_rate),
        }

    def _throttled_body(self, requested: int, available: float) -> dict[str, Any]:
        return {
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": RATE_LIMITS_DOC}}],
            "extensions": {
                "cost": {
                    "requestedQueryCost": requested,
                    "actualQueryCost": None,
                    "throttleStatus": self._throttle_status(available),
                }
            },
        }

    def _graphql_http(self, version: str, token: str | None, body: bytes, content_type: str) -> Response:
        if not re.fullmatch(r"\d{4}-\d{2}|unstable", version):
            return JSONResponse({"errors": "Not Found"}, status_code=404)
        if not self._token_valid(token):
            return JSONResponse(INVALID_TOKEN_BODY, status_code=401)
        assert token is not None
        try:
            if "application/graphql" in content_type:
                request: dict[str, Any] = {"query": body.decode()}
            else:
                request = json.loads(body)
            if not isinstance(request, dict) or not isinstance(request.get("query"), str):
                raise ValueError("no query")
            variables = request.get("variables") or {}
            if not isinstance(variables, dict):
                raise ValueError("variables must be an object")
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"errors": {"query": "Required parameter missing or invalid"}}, status_code=400)
        self._complete_due_jobs()
        status, payload = self._run_graphql(version, token, request["query"], variables, request.get("operationName"))
        return JSONResponse(payload, status_code=status)

    def _run_graphql(
        self, version: str, token: str, query: str, variables: dict[str, Any], operation_name: str | None
    ) -> tuple[int, dict[str, Any]]:
        schema = schema_for(version)
        bucket = self._bucket(token)

        def with_cost(payload: dict[str, Any], requested: int, actual: int | None) -> dict[str, Any]:
            payload["extensions"] = {
                "cost": {
                    "requestedQueryCost": requested,
                    "actualQueryCost": actual,
                    "throttleStatus": self._throttle_status(bucket.available),
                }
            }
            return payload

        try:
            document = parse(query)
        except GraphQLError as syntax_error:
            return 200, with_cost({"errors": [shopify_error(syntax_error)]}, 0, 0)
        errors = validate(schema, document)
        if errors:
            return 200, with_cost({"errors": [shopify_error(e) for e in errors]}, 0, 0)
        operation = operation_of(document, operation_name)
        if operation is None:
            ambiguous = {"message": "An operation name is required when the document holds several operations"}
            return 200, with_cost({"errors": [ambiguous]}, 0, 0)

        calculator = CostCalculator(schema, document, variables)
        requested = calculator.cost(operation)
        if requested > MAX_QUERY_COST:
            message = (
                f"Query cost is {requested}, which exceeds the single query max cost limit ({MAX_QUERY_COST}).\n\n"
                f"See {RATE_LIMITS_DOC} for more information on how the cost of a query is calculated.\n\n"
                "To query larger amounts of data with fewer limits, bulk operations should be used instead.\n"
                "See https://shopify.dev/api/usage/bulk-operations/queries for usage details.\n"
            )
            too_costly = {
                "message": message,
                "extensions": {
                    "code": "MAX_COST_EXCEEDED",
                    "cost": requested,
                    "maxCost": MAX_QUERY_COST,
                    "documentation": RATE_LIMITS_DOC,
                },
            }
            return 200, with_cost({"errors": [too_costly]}, requested, None)
        if requested > bucket.available:
            return self.ctx.config.shopify_throttle_status, self._throttled_body(requested, bucket.available)

        bucket.available -= requested
        result = execute_sync(
            schema,
            document,
            root_value=self._root(version, operation.operation),
            variable_values=variables,
            operation_name=operation_name,
        )
        data = result.data
        actual = requested if operation.operation is OperationType.MUTATION else calculator.cost(operation, data or {})
        actual = min(actual, requested)
        # The bucket is charged the requested cost up front and refunded the difference.
        bucket.available = min(self.ctx.config.shopify_bucket_size, bucket.available + (requested - actual))
        payload: dict[str, Any] = {}
        if result.errors:
            payload["errors"] = [shopify_error(e) for e in result.errors]
        payload["data"] = data
        return 200, with_cost(payload, requested, actual)

    # -- resolvers -----------------------------------------------------------------------------

    def _root(self, version: str, operation: OperationType) -> dict[str, Any]:
        if operation is OperationType.MUTATION:
            return {
                "orderCreate": self._m_order_create,
                "orderCancel": self._m_order_cancel,
                "fulfillmentCreate": self._m_fulfillment_create,
                "refundCreate": self._idempotent(version, "refundCreate", self._m_refund_create),
                "inventoryAdjustQuantities": self._idempotent(
                    version, "inventoryAdjustQuantities", self._m_inventory_adjust
                ),
                "inventorySetQuantities": self._idempotent(version, "inventorySetQuantities", self._m_inventory_set),
                "webhookSubscriptionCreate": lambda info, **a: self._m_webhook_create(version, **a),
                "webhookSubscriptionDelete": lambda _info, **a: self._m_webhook_delete(**a),
                "returnRequest": lambda _info, input: self._return_payload(lambda: self._return_request(input)),
                "returnApproveRequest": lambda _info, input: self._return_payload(
                    lambda: self._return_approve(input["id"])
                ),
                "returnClose": lambda _info, id: self._return_payload(lambda: self._return_close(id)),
                "returnCancel": lambda _info, id, notifyCustomer=False: self._return_payload(
                    lambda: self._return_cancel(id)
                ),
                "reverseDeliveryCreateWithShipping": lambda _info, **a: self._m_reverse_delivery_create(**a),
            }
        return {
            "shop": {"name": SHOP_NAME, "myshopifyDomain": SHOP_DOMAIN, "currencyCode": CURRENCY},
            "order": lambda _info, id: self._v_order(o) if (o := self._order_of(id)) else None,
            "orders": lambda _info, **a: self._q_orders(**a),
            "job": lambda _info, id: self._v_job(j) if (j := self.jobs.get(parse_gid_text(id, "Job") or "")) else None,
            "location": lambda _info, id: self._v_location(n) if (n := self._known_location(id)) else None,
            "locations": lambda _info, **a: connection(
                [w.shopify_location_id for w in seed.WAREHOUSES], self._v_location, **a
            ),
            "inventoryItem": lambda _info, id: self._q_inventory_item(id),
            "inventoryLevel": lambda _info, id: self._q_inventory_level(id),
            "productVariants": lambda _info, query=None, **a: connection(
                self._variants_matching(query), self._v_variant, **a
            ),
            "return": lambda _info, id: self._q_return(id),
            "webhookSubscription": lambda _info, id: self._q_webhook(id),
            "webhookSubscriptions": lambda _info, topics=None, **a: connection(
                [s for s in self._live_subscriptions() if topics is None or TOPIC_ENUMS.get(s.topics[0]) in topics],
                self._v_webhook,
                **a,
            ),
        }

    def _idempotent(
        self, version: str, mutation: str, handler: Callable[..., dict[str, Any]]
    ) -> Callable[..., dict[str, Any]]:
        """Wrap a mutation so `@idempotent(key:)` replays the first result, and is enforced from 2026-04."""

        def resolve(info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
            directive = info.schema.get_directive("idempotent")
            key: str | None = None
            if directive is not None:
                values = get_directive_values(directive, info.field_nodes[0], info.variable_values)
                key = values["key"] if values else None
            if key is None and requires_idempotency(version) and mutation in IDEMPOTENT_MUTATIONS:
                raise GraphQLError(
                    f"The @idempotent directive is required for the {mutation} mutation.",
                    extensions={"code": "BAD_REQUEST"},
                )
            if key is not None and (mutation, key) in self.idempotency:
                return self.idempotency[(mutation, key)]
            payload = handler(**args)
            if key is not None and not payload.get("userErrors"):
                self.idempotency[(mutation, key)] = payload
            return payload

        return resolve

    @staticmethod
    def _user_errors(error: UserFacingError, keys: tuple[str, ...]) -> dict[str, Any]:
        payload: dict[str, Any] = {k: None for k in keys}
        payload["userErrors"] = [error.as_dict()]
        return payload

    # -- views: records as GraphQL objects (callables resolve lazily, so cycles are fine) ----------

    def _bag(self, amount: Decimal, currency: str = CURRENCY) -> dict[str, Any]:
        money = {"amount": str(_money(amount)), "currencyCode": currency}
        return {"shopMoney": money, "presentmentMoney": money}

    def _v_location(self, location_id: int) -> dict[str, Any]:
        return {
            "id": gid("Location", location_id),
            "legacyResourceId": str(location_id),
            "name": self._location_name(location_id) or f"Location {location_id}",
        }

    def _known_location(self, value: Any) -> int | None:
        number = parse_gid(value, "Location")
        return number if number is not None and self._location_name(number) is not None else None

    def _v_tax(self, tax: TaxRec, currency: str) -> dict[str, Any]:
        return {
            "title": tax.title,
            "rate": float(tax.rate),
            "ratePercentage": float(tax.rate * 100),
            "priceSet": self._bag(tax.amount, currency),
        }

    def _v_discount_app(self, app: DiscountAppRec) -> dict[str, Any]:
        view: dict[str, Any] = {
            "index": app.index,
            "targetType": app.target_type.upper(),
            "allocationMethod": app.allocation_method.upper(),
        }
        if app.code is not None:
            return {**view, "__typename": "DiscountCodeApplication", "code": app.code}
        return {**view, "__typename": "ManualDiscountApplication", "title": app.title}

    def _v_line(self, order: OrderRec, line: LineItemRec) -> dict[str, Any]:
        refundable = line.quantity - order.refunded_quantity(line.id)
        allocations = []
        if line.discount and line.discount_index is not None:
            app = order.discount_apps[line.discount_index]
            allocations.append(
                {
                    "allocatedAmountSet": self._bag(line.discount, order.currency),
                    "discountApplication": self._v_discount_app(app),
                }
            )
        unit_discounted = line.price - (line.discount / line.quantity if line.quantity else Decimal(0))
        item = self._item_by_variant(line.variant_id) if line.variant_id else None
        return {
            "id": gid("LineItem", line.id),
            "name": line.name,
            "title": line.name.split(" (")[0],
            "sku": line.sku,
            "quantity": line.quantity,
            "currentQuantity": line.quantity - order.refunded_quantity(line.id),
            "refundableQuantity": refundable,
            "unfulfilledQuantity": max(0, line.quantity - order.fulfilled_quantity(line.id)),
            "requiresShipping": line.requires_shipping,
            "variant": (lambda _info, i=item: self._v_variant(i)) if item else None,
            "originalUnitPriceSet": self._bag(line.price, order.currency),
            "discountedUnitPriceSet": self._bag(unit_discounted, order.currency),
            "originalTotalSet": self._bag(line.price * line.quantity, order.currency),
            "totalDiscountSet": self._bag(line.discount, order.currency),
            "discountAllocations": allocations,
            "taxLines": lambda _info, first=None: [
                self._v_tax(t, order.currency) for t in first_n(line.tax_lines, first)
            ],
        }

    def _v_shipping_line(self, order: OrderRec, line: ShippingLineRec) -> dict[str, Any]:
        return {
            "id": gid("ShippingLine", line.id),
            "title": line.title,
            "code": line.code,
            "originalPriceSet": self._bag(line.price, order.currency),
            "discountedPriceSet": self._bag(line.price, order.currency),
            "discountAllocations": [],
            "taxLines": [self._v_tax(t, order.currency) for t in line.tax_lines],
        }

    def _v_fulfillment_order(self, order: OrderRec, fo: FulfillmentOrderRec) -> dict[str, Any]:
        lines = {li.id: li for li in order.line_items}
        return {
            "id": gid("FulfillmentOrder", fo.id),
            "status": fo.status.upper(),
            "createdAt": _iso(fo.created_at),
            "updatedAt": _iso(fo.updated_at),
            "orderId": gid("Order", order.id),
            "assignedLocation": {
                "name": self._location_name(fo.location_id) or "",
                "location": self._v_location(fo.location_id),
            },
            "lineItems": lambda _info, **a: connection(
                fo.lines,
                lambda ln: {
                    "id": gid("FulfillmentOrderLineItem", ln.id),
                    "totalQuantity": ln.total,
                    "remainingQuantity": ln.remaining,
                    "sku": lines[ln.line_item_id].sku,
                    "lineItem": lambda _info: self._v_line(order, lines[ln.line_item_id]),
                },
                **a,
            ),
        }

    def _v_fulfillment(self, order: OrderRec, f: FulfillmentRec) -> dict[str, Any]:
        lines = {li.id: li for li in order.line_items}
        tracking = [
            {
                "company": f.tracking_company,
                "number": number,
                "url": f.tracking_urls[i] if i < len(f.tracking_urls) else None,
            }
            for i, number in enumerate(f.tracking_numbers)
        ] or [{"company": f.tracking_company, "number": None, "url": None}]
        return {
            "id": gid("Fulfillment", f.id),
            "legacyResourceId": str(f.id),
            "name": f.name,
            "status": f.status.upper(),
            "createdAt": _iso(f.created_at),
            "location": self._v_location(f.location_id),
            "trackingInfo": lambda _info, first=None: first_n(tracking, first),
            "fulfillmentLineItems": lambda _info, **a: connection(
                f.lines,
                lambda fl: {
                    "id": gid("FulfillmentLineItem", fl.id),
                    "quantity": fl.quantity,
                    "lineItem": lambda _info: self._v_line(order, lines[fl.line_item_id]),
                },
                **a,
            ),
        }

    def _v_transaction(self, order: OrderRec, t: TransactionRec) -> dict[str, Any]:
        parent = next((p for p in order.transactions if p.id == t.parent_id), None)
        return {
            "id": gid("OrderTransaction", t.id),
            "kind": t.kind.upper(),
            "status": t.status.upper(),
            "gateway": t.gateway,
            "amountSet": self._bag(t.amount, order.currency),
            "createdAt": _iso(t.created_at),
            "parentTransaction": (lambda _info: self._v_transaction(order, parent)) if parent else None,
        }

    def _v_refund(self, order: OrderRec, r: RefundRec) -> dict[str, Any]:
        lines = {li.id: li for li in order.line_items}
        return {
            "id": gid("Refund", r.id),
            "legacyResourceId": str(r.id),
            "note": r.note,
            "createdAt": _iso(r.created_at),
            "totalRefundedSet": self._bag(r.total, order.currency),
            "order": lambda _info: self._v_order(order),
            "refundLineItems": lambda _info, **a: connection(
                r.lines,
                lambda rl: {
                    "id": gid("RefundLineItem", rl.id),
                    "lineItem": lambda _info: self._v_line(order, lines[rl.line_item_id]),
                    "quantity": rl.quantity,
                    "restockType": rl.restock_type.upper(),
                    "restocked": rl.restock_type != "no_restock",
                    "location": self._v_location(rl.location_id) if rl.location_id else None,
                    "subtotalSet": self._bag(rl.subtotal, order.currency),
                    "totalTaxSet": self._bag(rl.total_tax, order.currency),
                },
                **a,
            ),
            "transactions": lambda _info, **a: connection(r.transactions, lambda t: self._v_transaction(order, t), **a),
        }

    @staticmethod
    def _v_address(address: dict[str, Any] | None) -> dict[str, Any] | None:
        if address is None:
            return None
        return {
            "name": address.get("name"),
            "firstName": address.get("first_name"),
            "lastName": address.get("last_name"),
            "company": address.get("company"),
            "address1": address.get("address1"),
            "address2": address.get("address2"),
            "city": address.get("city"),
            "province": address.get("province"),
            "provinceCode": address.get("province_code"),
            "zip": address.get("zip"),
            "country": address.get("country"),
            "countryCodeV2": address.get("country_code"),
            "phone": address.get("phone"),
        }

    def _v_order(self, order: OrderRec) -> dict[str, Any]:
        customer = order.customer
        status = order.fulfillment_status()
        return {
            "id": gid("Order", order.id),
            "legacyResourceId": str(order.id),
            "name": order.name,
            "email": order.email,
            "phone": order.phone,
            "note": order.note,
            "tags": order.tags,
            "createdAt": _iso(order.created_at),
            "updatedAt": _iso(order.updated_at),
            "processedAt": _iso(order.created_at),
            "cancelledAt": _iso(order.cancelled_at),
            "cancelReason": order.cancel_reason.upper() if order.cancel_reason else None,
            "closed": order.closed_at is not None,
            "closedAt": _iso(order.closed_at),
            "currencyCode": order.currency,
            "displayFinancialStatus": order.financial_status.upper(),
            "displayFulfillmentStatus": {None: "UNFULFILLED", "partial": "PARTIALLY_FULFILLED"}.get(
                status, "FULFILLED"
            ),
            "customer": None
            if customer is None
            else {
                "id": gid("Customer", customer["id"]),
                "legacyResourceId": str(customer["id"]),
                "firstName": customer.get("first_name"),
                "lastName": customer.get("last_name"),
                "displayName": customer.get("display_name") or customer.get("email") or "",
                "email": customer.get("email"),
                "phone": customer.get("phone"),
            },
            "shippingAddress": self._v_address(order.shipping_address),
            "billingAddress": self._v_address(order.billing_address),
            "paymentTerms": None
            if order.payment_terms is None
            else {
                "id": gid("PaymentTerms", order.id),
                "paymentTermsName": order.payment_terms["payment_terms_name"],
                "paymentTermsType": order.payment_terms["payment_terms_type"].upper(),
                "dueInDays": order.payment_terms["due_in_days"],
            },
            "lineItems": lambda _info, **a: connection(order.line_items, lambda li: self._v_line(order, li), **a),
            "shippingLines": lambda _info, **a: connection(
                order.shipping_lines, lambda s: self._v_shipping_line(order, s), **a
            ),
            "discountApplications": lambda _info, **a: connection(order.discount_apps, self._v_discount_app, **a),
            "taxLines": [self._v_tax(t, order.currency) for t in order.aggregated_tax_lines()],
            "subtotalPriceSet": self._bag(order.subtotal, order.currency),
            "totalPriceSet": self._bag(order.total_price, order.currency),
            "totalTaxSet": self._bag(order.total_tax, order.currency),
            "totalDiscountsSet": self._bag(order.total_discounts, order.currency),
            "totalShippingPriceSet": self._bag(order.total_shipping, order.currency),
            "totalRefundedSet": self._bag(order.total_refunded, order.currency),
            "currentTotalPriceSet": self._bag(order.total_price - order.total_refunded, order.currency),
            "fulfillmentOrders": lambda _info, displayable=None, **a: connection(
                order.fulfillment_orders, lambda fo: self._v_fulfillment_order(order, fo), **a
            ),
            "fulfillments": lambda _info, first=None: [
                self._v_fulfillment(order, f) for f in first_n(order.fulfillments, first)
            ],
            "refunds": lambda _info, first=None: [self._v_refund(order, r) for r in first_n(order.refunds, first)],
            "transactions": lambda _info, first=None: [
                self._v_transaction(order, t) for t in first_n(order.transactions, first)
            ],
            "returns": lambda _info, query=None, **a: connection(
                order.returns, lambda r: self._v_return(order, r), **a
            ),
        }

    def _v_job(self, job: JobRec) -> dict[str, Any]:
        return {"id": gid("Job", job.id), "done": job.done}

    def _v_variant(self, item: seed.CatalogItem) -> dict[str, Any]:
        return {
            "id": gid("ProductVariant", item.shopify_variant_id),
            "legacyResourceId": str(item.shopify_variant_id),
            "sku": item.sku,
            "title": item.name.split("(")[-1].rstrip(")"),
            "displayName": item.name,
            "price": str(item.price),
            "inventoryItem": lambda _info: self._v_inventory_item(item),
        }

    def _variants_matching(self, query: str | None) -> list[seed.CatalogItem]:
        terms = _search_terms(query)
        wanted = [v for k, _op, v in terms if k == "sku"]
        return [i for i in seed.CATALOG if not wanted or i.sku in wanted]

    def _v_inventory_item(self, item: seed.CatalogItem) -> dict[str, Any]:
        locations = [loc for (item_id, loc) in sorted(self.stock) if item_id == item.shopify_inventory_item_id]
        return {
            "id": gid("InventoryItem", item.shopify_inventory_item_id),
            "legacyResourceId": str(item.shopify_inventory_item_id),
            "sku": item.sku,
            "tracked": True,
            "variant": lambda _info: self._v_variant(item),
            "inventoryLevels": lambda _info, **a: connection(
                locations, lambda loc: self._v_inventory_level(item, loc), **a
            ),
            "inventoryLevel": lambda _info, locationId: (
                self._v_inventory_level(item, loc)
                if (loc := parse_gid(locationId, "Location")) is not None
                and (item.shopify_inventory_item_id, loc) in self.stock
                else None
            ),
        }

    def _v_inventory_level(self, item: seed.CatalogItem, location_id: int) -> dict[str, Any]:
        rec = self.stock[(item.shopify_inventory_item_id, location_id)]
        values = {"available": rec.available, "on_hand": rec.on_hand, "committed": rec.committed, "incoming": 0}
        return {
            # Shopify's InventoryLevel ids carry the item in a query string.
            "id": f"gid://shopify/InventoryLevel/{location_id}?inventory_item_id={item.shopify_inventory_item_id}",
            "location": self._v_location(location_id),
            "item": lambda _info: self._v_inventory_item(item),
            "quantities": lambda _info, names: [
                {"name": n, "quantity": values[n], "updatedAt": _iso(rec.updated_at)} for n in names if n in values
            ],
        }

    def _q_inventory_item(self, value: Any) -> dict[str, Any] | None:
        number = parse_gid(value, "InventoryItem")
        item = next((i for i in seed.CATALOG if i.shopify_inventory_item_id == number), None)
        return self._v_inventory_item(item) if item else None

    def _q_inventory_level(self, value: Any) -> dict[str, Any] | None:
        match = re.fullmatch(r"gid://shopify/InventoryLevel/(\d+)\?inventory_item_id=(\d+)", str(value))
        if match is None:
            return None
        location_id, item_id = int(match[1]), int(match[2])
        if (item_id, location_id) not in self.stock:
            return None
        return self._v_inventory_level(self._item_by_inventory_id(item_id), location_id)

    # -- queries -------------------------------------------------------------------------------

    def _q_orders(
        self,
        query: str | None = None,
        reverse: bool = False,
        sortKey: str = "ID",
        **page: Any,
    ) -> dict[str, Any]:
        orders = [o for o in self.orders.values() if _order_matches(o, _search_terms(query))]
        sort_keys: dict[str, Callable[[OrderRec], Any]] = {
            "CREATED_AT": lambda o: o.created_at,
            "UPDATED_AT": lambda o: o.updated_at,
            "ORDER_NUMBER": lambda o: o.number,
            "ID": lambda o: o.id,
        }
        orders.sort(key=sort_keys.get(sortKey, sort_keys["ID"]), reverse=bool(reverse))
        return connection(orders, self._v_order, **page)

    # -- orders: creation ----------------------------------------------------------------------

    def _demo_plan(self, customer: seed.SeedCustomer) -> dict[str, Any]:
        """A random but plausible order for a seed customer: D2C buyers pay, B2B buyers are on terms."""
        rnd = self.ctx.random
        b2b = customer.terms == "terms"
        items = rnd.sample(list(seed.CATALOG), k=rnd.randint(1, 3))
        lines = [{"item": item, "quantity": rnd.randint(5, 40) if b2b else rnd.randint(1, 4)} for item in items]
        return {
            "customer": customer,
            "lines": lines,
            "discount_code": None if b2b or rnd.random() > 0.3 else ("WELCOME10", Decimal(10)),
            "tax_rate": None if b2b else Decimal("0.0625"),
            "shipping": ("Freight", "freight", Decimal(0)) if b2b else ("Standard", "standard", Decimal("9.95")),
            "financial_status": "pending" if b2b else "paid",
        }

    def _create_order_from_plan(self, plan: dict[str, Any], *, emit: bool) -> OrderRec:
        customer: seed.SeedCustomer = plan["customer"]
        b2b = customer.terms == "terms"
        first, _, last = customer.name.partition(" ")
        if b2b:
            first, last = "Receiving", "Dock"
        address = {
            "first_name": first,
            "last_name": last or None,
            "name": f"{first} {last}".strip(),
            "company": customer.name if b2b else None,
            "address1": customer.street1,
            "address2": None,
            "city": customer.city,
            "province": customer.state,
            "province_code": customer.state,
            "zip": customer.zip,
            "country": "United States",
            "country_code": "US",
            "phone": None,
        }
        customer_view = {
            "id": customer.shopify_customer_id,
            "email": customer.email,
            "first_name": customer.name.partition(" ")[0],
            "last_name": customer.name.partition(" ")[2] or None,
            "display_name": customer.name,
            "phone": None,
        }
        line_specs = [
            {
                "item": spec["item"],
                "sku": spec["item"].sku,
                "name": spec["item"].name,
                "price": spec["item"].price,
                "quantity": spec["quantity"],
                "taxes": [("State Tax", plan["tax_rate"])] if plan["tax_rate"] else [],
            }
            for spec in plan["lines"]
        ]
        title, code, price = plan["shipping"]
        return self._create_order(
            email=customer.email,
            phone=None,
            note=None,
            customer=customer_view,
            shipping_address=address,
            billing_address=address,
            line_specs=line_specs,
            shipping_specs=[{"title": title, "code": code, "price": price, "taxes": []}],
            discount_code=plan["discount_code"],
            financial_status=plan["financial_status"],
            payment_terms={"payment_terms_name": "Net 30", "payment_terms_type": "net", "due_in_days": 30}
            if b2b
            else None,
            tags=["b2b"] if b2b else [],
            emit=emit,
        )

    def _create_order(
        self,
        *,
        email: str | None,
        phone: str | None,
        note: str | None,
        customer: dict[str, Any] | None,
        shipping_address: dict[str, Any] | None,
        billing_address: dict[str, Any] | None,
        line_specs: list[dict[str, Any]],
        shipping_specs: list[dict[str, Any]],
        discount_code: tuple[str, Decimal] | None,
        financial_status: str,
        payment_terms: dict[str, Any] | None,
        tags: list[str],
        emit: bool,
    ) -> OrderRec:
        now = self.ctx.clock.now()
        self.order_number += 1
        order_id = self._next_id("order")
        apps: list[DiscountAppRec] = []
        if discount_code is not None:
            apps.append(DiscountAppRec(index=0, code=discount_code[0], title=discount_code[0], value=discount_code[1]))
        lines: list[LineItemRec] = []
        for spec in line_specs:
            item: seed.CatalogItem | None = spec.get("item")
            price: Decimal = spec["price"]
            quantity: int = spec["quantity"]
            gross = price * quantity
            discount = _money(gross * apps[0].value / 100) if apps else Decimal(0)
            taxes = [TaxRec(title, rate, _money((gross - discount) * rate)) for title, rate in spec["taxes"]]
            lines.append(
                LineItemRec(
                    id=self._next_id("line_item"),
                    sku=spec["sku"],
                    name=spec["name"],
                    quantity=quantity,
                    price=price,
                    variant_id=item.shopify_variant_id if item else None,
                    product_id=item.shopify_product_id if item else None,
                    inventory_item_id=item.shopify_inventory_item_id if item else None,
                    requires_shipping=spec.get("requires_shipping", True),
                    discount=discount,
                    discount_index=0 if apps else None,
                    tax_lines=taxes,
                )
            )
        shipping = [
            ShippingLineRec(
                id=self._next_id("shipping_line"),
                title=s["title"],
                code=s.get("code"),
                price=s["price"],
                tax_lines=[TaxRec(t, r, _money(s["price"] * r)) for t, r in s.get("taxes", [])],
            )
            for s in shipping_specs
        ]
        order = OrderRec(
            id=order_id,
            number=self.order_number,
            email=email,
            phone=phone,
            note=note,
            created_at=now,
            updated_at=now,
            currency=CURRENCY,
            customer=customer,
            shipping_address=shipping_address,
            billing_address=billing_address,
            line_items=lines,
            shipping_lines=shipping,
            discount_apps=apps,
            financial_status=financial_status,
            tags=tags,
            payment_terms=payment_terms,
        )
        if financial_status == "paid":
            order.transactions.append(
                TransactionRec(
                    id=self._next_id("transaction"),
                    order_id=order_id,
                    kind="sale",
                    status="success",
                    gateway="shopify_payments",
                    amount=order.total_price,
                    parent_id=None,
                    created_at=now,
                )
            )
        shippable = [li for li in lines if li.requires_shipping]
        if shippable:
            location = self._choose_location(shippable)
            order.fulfillment_orders.append(
                FulfillmentOrderRec(
                    id=self._next_id("fulfillment_order"),
                    order_id=order_id,
                    location_id=location,
                    status="open",
                    lines=[FoLineRec(self._next_id("fo_line"), li.id, li.quantity, li.quantity) for li in shippable],
                    created_at=now,
                    updated_at=now,
                )
            )
            for li in shippable:
                if li.inventory_item_id is not None:
                    self._stock(li.inventory_item_id, location).committed += li.quantity
        self.orders[order_id] = order
        if emit:
            self._emit("orders/create", self._rest_order(order))
        return order

    def _stock(self, inventory_item_id: int, location_id: int) -> StockRec:
        return self.stock.setdefault((inventory_item_id, location_id), StockRec(on_hand=0))

    def _choose_location(self, lines: list[LineItemRec]) -> int:
        """The first warehouse that can ship every line, as Shopify's order routing would pick."""
        for warehouse in seed.WAREHOUSES:
            location = warehouse.shopify_location_id
            if all(
                li.inventory_item_id is None or self._stock(li.inventory_item_id, location).available >= li.quantity
                for li in lines
            ):
                return location
        return seed.WAREHOUSES[0].shopify_location_id

    def _m_order_create(self, _info: GraphQLResolveInfo, order: dict[str, Any], options: Any = None) -> dict[str, Any]:
        keys = ("order",)
        try:
            return {"order": self._v_order(self._order_create(order)), "userErrors": []}
        except UserFacingError as error:
            return self._user_errors(error, keys)

    def _order_create(self, data: dict[str, Any]) -> OrderRec:
        line_inputs = data.get("lineItems") or []
        if not line_inputs:
            raise UserFacingError("Line items must have at least one line item", ["order", "lineItems"], "INVALID")
        line_specs = []
        for i, line in enumerate(line_inputs):
            item = None
            if line.get("variantId") is not None:
                variant = parse_gid(line["variantId"], "ProductVariant")
                item = self._item_by_variant(variant) if variant is not None else None
                if item is None:
                    raise UserFacingError(
                        "Variant does not exist", ["order", "lineItems", str(i), "variantId"], "PRODUCT_DOES_NOT_EXIST"
                    )
            if line["quantity"] < 1:
                raise UserFacingError(
                    "Quantity must be greater than 0", ["order", "lineItems", str(i), "quantity"], "INVALID"
                )
            price_input = (line.get("priceSet") or {}).get("shopMoney")
            if price_input is not None:
                price = _amount(price_input["amount"])
            elif item is not None:
                price = item.price
            else:
                raise UserFacingError(
                    "Price is required for a custom line item", ["order", "lineItems", str(i), "priceSet"], "INVALID"
                )
            line_specs.append(
                {
                    "item": item,
                    "sku": line.get("sku") if line.get("sku") is not None else (item.sku if item else ""),
                    "name": line.get("title") or (item.name if item else "Custom item"),
                    "price": price,
                    "quantity": line["quantity"],
                    "requires_shipping": line.get("requiresShipping", True) is not False,
                    "taxes": [(t["title"], _amount(t["rate"])) for t in line.get("taxLines") or []],
                }
            )
        customer: dict[str, Any] | None = None
        associate = ((data.get("customer") or {}).get("toAssociate")) or {}
        if associate.get("id") is not None:
            number = parse_gid(associate["id"], "Customer")
            seeded = next((c for c in seed.CUSTOMERS if c.shopify_customer_id == number), None)
            if seeded is None:
                raise UserFacingError("Customer does not exist", ["order", "customer"], "CUSTOMER_DOES_NOT_EXIST")
            customer = {
                "id": seeded.shopify_customer_id,
                "email": seeded.email,
                "first_name": seeded.name.partition(" ")[0],
                "last_name": seeded.name.partition(" ")[2] or None,
                "display_name": seeded.name,
                "phone": None,
            }
        code = ((data.get("discountCode") or {}).get("itemPercentageDiscountCode")) or None
        status = (data.get("financialStatus") or "PAID").lower()
        return self._create_order(
            email=data.get("email") or (customer["email"] if customer else None),
            phone=data.get("phone"),
            note=data.get("note"),
            customer=customer,
            shipping_address=_rest_address(data.get("shippingAddress")),
            billing_address=_rest_address(data.get("billingAddress")),
            line_specs=line_specs,
            shipping_specs=[
                {
                    "title": s["title"],
                    "code": s.get("code"),
                    "price": _amount(s["priceSet"]["shopMoney"]["amount"]),
                    "taxes": [(t["title"], _amount(t["rate"])) for t in s.get("taxLines") or []],
                }
                for s in data.get("shippingLines") or []
            ],
            discount_code=(code["code"], Decimal(str(code["percentage"]))) if code else None,
            financial_status=status,
            payment_terms=None,
            tags=list(data.get("tags") or []),
            emit=True,
        )

    # -- orders: cancellation ------------------------------------------------------------------

    def _m_order_cancel(
        self,
        _info: GraphQLResolveInfo,
        orderId: str,
        reason: str,
        restock: bool,
        notifyCustomer: bool | None = None,
        refund: bool | None = None,
        refundMethod: dict[str, Any] | None = None,
        staffNote: str | None = None,
    ) -> dict[str, Any]:
        def refused(message: str, code: str, field_name: str = "orderId") -> dict[str, Any]:
            error = {"field": [field_name], "message": message, "code": code}
            return {"job": None, "orderCancelUserErrors": [error], "userErrors": [error]}

        order = self._order_of(orderId)
        if order is None:
            return refused("Order does not exist", "NOT_FOUND")
        if order.cancelled_at is not None:
            return refused("Cannot cancel an order that has already been cancelled", "INVALID")
        if order.fulfillments:
            return refused("Cannot cancel an order that has fulfillments", "INVALID")
        pending = next((j for j in self.jobs.values() if j.order_id == order.id and not j.done), None)
        if pending is not None:
            # The same request while the first is still running gets the running job (modeled).
            return {"job": self._v_job(pending), "orderCancelUserErrors": [], "userErrors": []}
        wants_refund = bool((refundMethod or {}).get("originalPaymentMethodsRefund")) if refundMethod else bool(refund)
        job = JobRec(
            id=self._uuid(),
            order_id=order.id,
            due_at=self.ctx.clock.now() + timedelta(seconds=CANCEL_JOB_SECONDS),
            reason=reason.lower(),
            restock=restock,
            refund=wants_refund,
            notify_customer=bool(notifyCustomer),
            staff_note=staffNote,
        )
        self.jobs[job.id] = job
        return {"job": self._v_job(job), "orderCancelUserErrors": [], "userErrors": []}

    def _complete_due_jobs(self) -> None:
        now = self.ctx.clock.now()
        for job in self.jobs.values():
            if job.done or job.due_at > now:
                continue
            job.done = True
            order = self.orders[job.order_id]
            order.cancelled_at = now
            order.cancel_reason = job.reason
            order.closed_at = now
            order.updated_at = now
            if job.staff_note:
                order.note = f"{order.note}\n{job.staff_note}" if order.note else job.staff_note
            for fo in order.fulfillment_orders:
                for line in fo.lines:
                    item_id = next(li.inventory_item_id for li in order.line_items if li.id == line.line_item_id)
                    if item_id is not None:
                        self._stock(item_id, fo.location_id).committed -= line.remaining
                    line.remaining = 0
                fo.status = "closed"
                fo.updated_at = now
            sale = sum((t.amount for t in order.transactions if t.kind == "sale"), Decimal(0))
            if job.refund and sale > 0:
                order.transactions.append(
                    TransactionRec(
                        id=self._next_id("transaction"),
                        order_id=order.id,
                        kind="refund",
                        status="success",
                        gateway="shopify_payments",
                        amount=sale - order.total_refunded,
                        parent_id=order.transactions[0].id,
                        created_at=now,
                    )
                )
                order.financial_status = "refunded"
            elif sale == 0:
                order.financial_status = "voided"
            self._emit("orders/cancelled", self._rest_order(order))

    # -- fulfillment ---------------------------------------------------------------------------

    def _m_fulfillment_create(
        self, _info: GraphQLResolveInfo, fulfillment: dict[str, Any], message: str | None = None
    ) -> dict[str, Any]:
        try:
            order, created = self._fulfillment_create(fulfillment)
        except UserFacingError as error:
            return {"fulfillment": None, "userErrors": [{"field": error.field, "message": error.message}]}
        return {"fulfillment": self._v_fulfillment(order, created), "userErrors": []}

    def _fulfillment_create(self, data: dict[str, Any]) -> tuple[OrderRec, FulfillmentRec]:
        groups = data["lineItemsByFulfillmentOrder"]
        if not groups:
            raise UserFacingError("Line items by fulfillment order must not be empty", ["fulfillment"])
        plan: list[tuple[FulfillmentOrderRec, FoLineRec, int]] = []
        order: OrderRec | None = None
        seen: set[int] = set()
        for g_index, group in enumerate(groups):
            where = ["fulfillment", "lineItemsByFulfillmentOrder", str(g_index)]
            fo_id = parse_gid(group["fulfillmentOrderId"], "FulfillmentOrder")
            found = next(((o, fo) for o in self.orders.values() for fo in o.fulfillment_orders if fo.id == fo_id), None)
            if found is None:
                raise UserFacingError("Fulfillment order does not exist.", [*where, "fulfillmentOrderId"])
            fo_order, fo = found
            if fo.id in seen:
                raise UserFacingError("Fulfillment order ids must be unique.", [*where, "fulfillmentOrderId"])
            seen.add(fo.id)
            if order is None:
                order = fo_order
            elif fo_order.id != order.id or fo.location_id != plan[0][0].location_id:
                raise UserFacingError(
                    "All fulfillment orders must belong to the same order and location.", [*where, "fulfillmentOrderId"]
                )
            if fo.status not in ("open", "in_progress"):
                raise UserFacingError(
                    f"Fulfillment order {fo.id} has an unfulfillable status= {fo.status}.",
                    [*where, "fulfillmentOrderId"],
                )
            items = group.get("fulfillmentOrderLineItems")
            if not items:
                plan += [(fo, ln, ln.remaining) for ln in fo.lines if ln.remaining > 0]
                continue
            for i_index, item in enumerate(items):
                line_id = parse_gid(item["id"], "FulfillmentOrderLineItem")
                line = next((ln for ln in fo.lines if ln.id == line_id), None)
                if line is None:
                    raise UserFacingError(
                        "Fulfillment order line item does not exist.",
                        [*where, "fulfillmentOrderLineItems", str(i_index), "id"],
                    )
                if item["quantity"] < 1 or item["quantity"] > line.remaining:
                    raise UserFacingError(
                        "Invalid fulfillment order line item quantity requested.",
                        [*where, "fulfillmentOrderLineItems", str(i_index), "quantity"],
                    )
                plan.append((fo, line, item["quantity"]))
        assert order is not None
        if not plan:
            raise UserFacingError("Fulfillment order has no remaining line items to fulfill.", ["fulfillment"])
        if order.cancelled_at is not None:
            raise UserFacingError("Cannot fulfill a cancelled order.", ["fulfillment"])
        now = self.ctx.clock.now()
        tracking = data.get("trackingInfo") or {}
        numbers = list(tracking.get("numbers") or ([tracking["number"]] if tracking.get("number") else []))
        urls = list(tracking.get("urls") or ([tracking["url"]] if tracking.get("url") else []))
        location = plan[0][0].location_id
        record = FulfillmentRec(
            id=self._next_id("fulfillment"),
            order_id=order.id,
            name=f"{order.name}.{len(order.fulfillments) + 1}",
            location_id=location,
            status="success",
            tracking_company=tracking.get("company"),
            tracking_numbers=numbers,
            tracking_urls=urls,
            lines=[],
            created_at=now,
            notify_customer=bool(data.get("notifyCustomer")),
        )
        for fo, line, quantity in plan:
            line.remaining -= quantity
            fo.status = "closed" if all(ln.remaining == 0 for ln in fo.lines) else "in_progress"
            fo.updated_at = now
            item_id = next(li.inventory_item_id for li in order.line_items if li.id == line.line_item_id)
            if item_id is not None:
                stock = self._stock(item_id, fo.location_id)
                stock.committed -= quantity
                stock.on_hand -= quantity
                stock.updated_at = now
            existing = next((fl for fl in record.lines if fl.line_item_id == line.line_item_id), None)
            if existing is not None:
                existing.quantity += quantity
            else:
                record.lines.append(FulfillmentLineRec(self._next_id("fulfillment_line"), line.line_item_id, quantity))
        order.fulfillments.append(record)
        order.updated_at = now
        self._emit("fulfillments/create", self._rest_fulfillment(order, record))
        return order, record

    # -- refunds -------------------------------------------------------------------------------

    def _m_refund_create(self, input: dict[str, Any]) -> dict[str, Any]:
        try:
            order, refund = self._refund_create(input)
        except UserFacingError as error:
            return {"refund": None, "order": None, "userErrors": [{"field": error.field, "message": error.message}]}
        return {"refund": self._v_refund(order, refund), "order": self._v_order(order), "userErrors": []}

    def _refund_create(self, data: dict[str, Any]) -> tuple[OrderRec, RefundRec]:
        order = self._order_of(data["orderId"])
        if order is None:
            raise UserFacingError("Order does not exist", ["orderId"])
        now = self.ctx.clock.now()
        lines_by_id = {li.id: li for li in order.line_items}
        refund_lines: list[RefundLineRec] = []
        for index, line_input in enumerate(data.get("refundLineItems") or []):
            where = ["refundLineItems", str(index)]
            line = lines_by_id.get(parse_gid(line_input["lineItemId"], "LineItem") or -1)
            if line is None:
                raise UserFacingError("Line item does not exist on this order", [*where, "lineItemId"])
            quantity = line_input["quantity"]
            if quantity < 1 or quantity > line.quantity - order.refunded_quantity(line.id):
                raise UserFacingError("Quantity cannot refund more items than were purchased", [*where, "quantity"])
            restock_type = (line_input.get("restockType") or "NO_RESTOCK").lower()
            location = parse_gid(line_input.get("locationId"), "Location") if line_input.get("locationId") else None
            if restock_type in ("return", "cancel") and location is None:
                fo = next((f for f in order.fulfillment_orders), None)
                location = fo.location_id if fo else seed.WAREHOUSES[0].shopify_location_id
            unit_net = line.price - (line.discount / line.quantity)
            unit_tax = sum((t.amount for t in line.tax_lines), Decimal(0)) / line.quantity
            refund_lines.append(
                RefundLineRec(
                    id=self._next_id("refund_line"),
                    line_item_id=line.id,
                    quantity=quantity,
                    restock_type=restock_type,
                    location_id=location,
                    subtotal=_money(unit_net * quantity),
                    total_tax=_money(unit_tax * quantity),
                )
            )
        shipping_input = data.get("shipping") or {}
        shipping = (
            order.total_shipping if shipping_input.get("fullRefund") else _amount(shipping_input.get("amount") or 0)
        )
        if shipping > order.total_shipping:
            raise UserFacingError("Shipping refund amount exceeds the shipping paid", ["shipping", "amount"])
        captured = sum(
            (t.amount for t in order.transactions if t.kind in ("sale", "capture") and t.status == "success"),
            Decimal(0),
        )
        refundable = captured - order.total_refunded
        transactions: list[TransactionRec] = []
        for index, txn in enumerate(data.get("transactions") or []):
            amount = _amount(txn["amount"])
            parent = parse_gid(txn.get("parentId"), "OrderTransaction") if txn.get("parentId") else None
            if parent is not None and all(t.id != parent for t in order.transactions):
                raise UserFacingError("Parent transaction does not exist", ["transactions", str(index), "parentId"])
            if amount <= 0 or amount > refundable:
                raise UserFacingError(
                    f"Refund amount {amount} is greater than the refundable amount {_money(refundable)}",
                    ["transactions", str(index), "amount"],
                )
            refundable -= amount
            transactions.append(
                TransactionRec(
                    id=self._next_id("transaction"),
                    order_id=order.id,
                    kind="refund",
                    status="success",
                    gateway=txn["gateway"],
                    amount=amount,
                    parent_id=parent,
                    created_at=now,
                )
            )
        if not refund_lines and not transactions and shipping == 0:
            raise UserFacingError("A refund needs line items, shipping or transactions", ["refundLineItems"])
        refund = RefundRec(
            id=self._next_id("refund"),
            order_id=order.id,
            note=data.get("note"),
            created_at=now,
            lines=refund_lines,
            transactions=transactions,
            shipping=shipping,
            restock=any(rl.restock_type != "no_restock" for rl in refund_lines),
        )
        for rl in refund_lines:
            line = lines_by_id[rl.line_item_id]
            if rl.restock_type in ("return", "cancel") and line.inventory_item_id and rl.location_id:
                stock = self._stock(line.inventory_item_id, rl.location_id)
                if rl.restock_type == "cancel":
                    # Unfulfilled units: release the commitment rather than add stock.
                    stock.committed = max(0, stock.committed - rl.quantity)
                else:
                    stock.on_hand += rl.quantity
                stock.updated_at = now
        order.transactions.extend(transactions)
        order.refunds.append(refund)
        order.updated_at = now
        if transactions:
            order.financial_status = "refunded" if order.total_refunded >= captured else "partially_refunded"
        self._emit("refunds/create", self._rest_refund(order, refund))
        return order, refund

    # -- returns -------------------------------------------------------------------------------
    #
    # Modelled on the Admin API's return flow. Simplified, and said so here: one reverse fulfillment
    # order per return (at the location of the first fulfillment it returns from), no exchanges or
    # return shipping fees, no declines, and refunds are not linked to the return they pay for (so a
    # return line's refunded quantity stays 0; refundCreate works on the order, as orderflow uses it).

    def _return_payload(self, action: Callable[[], tuple[OrderRec, ReturnRec]]) -> dict[str, Any]:
        try:
            order, ret = action()
        except UserFacingError as error:
            return {"return": None, "userErrors": [error.as_dict()]}
        return {"return": self._v_return(order, ret), "userErrors": []}

    def _find_return(self, value: Any) -> tuple[OrderRec, ReturnRec]:
        number = parse_gid(value, "Return")
        for order in self.orders.values():
            for ret in order.returns:
                if ret.id == number:
                    return order, ret
        raise UserFacingError("Return does not exist.", ["id"], "NOT_FOUND")

    def _q_return(self, value: Any) -> dict[str, Any] | None:
        try:
            order, ret = self._find_return(value)
        except UserFacingError:
            return None
        return self._v_return(order, ret)

    def _fulfillment_line(self, order: OrderRec, fulfillment_line_id: int) -> FulfillmentLineRec | None:
        return next((fl for f in order.fulfillments for fl in f.lines if fl.id == fulfillment_line_id), None)

    def _returning(self, order: OrderRec, fulfillment_line_id: int) -> int:
        """Units of a fulfillment line already in a return that is not cancelled or declined."""
        return sum(
            line.quantity
            for ret in order.returns
            if ret.status not in ("canceled", "declined")
            for line in ret.lines
            if line.fulfillment_line_id == fulfillment_line_id
        )

    def _return_request(self, data: dict[str, Any]) -> tuple[OrderRec, ReturnRec]:
        """`returnRequest`: a customer asks to send fulfilled units back; the return is REQUESTED."""
        order = self._order_of(data["orderId"])
        if order is None:
            raise UserFacingError("Order does not exist.", ["input", "orderId"], "NOT_FOUND")
        items = data.get("returnLineItems") or []
        if not items:
            raise UserFacingError("Return line items can't be blank.", ["input", "returnLineItems"], "BLANK")
        lines: list[ReturnLineRec] = []
        asked: dict[int, int] = {}
        for index, item in enumerate(items):
            where = ["input", "returnLineItems", str(index)]
            line = self._fulfillment_line(order, parse_gid(item["fulfillmentLineItemId"], "FulfillmentLineItem") or -1)
            if line is None:
                raise UserFacingError("Fulfillment line item does not exist.", [*where, "fulfillmentLineItemId"],
                                      "NOT_FOUND")  # fmt: skip
            asked[line.id] = asked.get(line.id, 0) + item["quantity"]
            returnable = line.quantity - self._returning(order, line.id)
            if item["quantity"] < 1 or asked[line.id] > returnable:
                raise UserFacingError(
                    f"Quantity must be between 1 and the {returnable} returnable units of the fulfillment line item.",
                    [*where, "quantity"], "GREATER_THAN",
                )  # fmt: skip
            note = item.get("customerNote")
            if note is not None and len(note) > 300:
                raise UserFacingError("Customer note is too long (maximum is 300 characters).",
                                      [*where, "customerNote"], "TOO_LONG")  # fmt: skip
            lines.append(ReturnLineRec(self._next_id("return_line"), line.id, line.line_item_id, item["quantity"],
                                       item.get("returnReason") or "UNKNOWN", note))  # fmt: skip
        now = self.ctx.clock.now()
        ret = ReturnRec(self._next_id("return"), order.id, f"{order.name}-R{len(order.returns) + 1}", "requested",
                        lines, now)  # fmt: skip
        order.returns.append(ret)
        order.updated_at = now
        self._emit("returns/request", self._rest_return(order, ret))
        return order, ret

    def _return_approve(self, value: Any) -> tuple[OrderRec, ReturnRec]:
        """`returnApproveRequest`: REQUESTED becomes OPEN, with a reverse fulfillment order to receive it."""
        order, ret = self._find_return(value)
        if ret.status != "requested":
            raise UserFacingError(
                f"Return is not approvable. Only returns with status REQUESTED can be approved (it is "
                f"{ret.status.upper()}).", ["input", "id"], "INVALID_STATE",
            )  # fmt: skip
        first = ret.lines[0].fulfillment_line_id
        location = next(f.location_id for f in order.fulfillments for fl in f.lines if fl.id == first)
        ret.reverse_orders.append(
            ReverseFulfillmentOrderRec(self._next_id("reverse_fo"), location, "open",
                                       [(self._next_id("reverse_fo_line"), line.id) for line in ret.lines])
        )  # fmt: skip
        ret.status = "open"
        order.updated_at = self.ctx.clock.now()
        self._emit("returns/approve", self._rest_return(order, ret))
        return order, ret

    def _return_close(self, value: Any) -> tuple[OrderRec, ReturnRec]:
        """`returnClose`: an OPEN return is done."""
        order, ret = self._find_return(value)
        if ret.status != "open":
            raise UserFacingError(f"Return is not closable: it is {ret.status.upper()}.", ["id"], "INVALID_STATE")
        now = self.ctx.clock.now()
        ret.status, ret.closed_at = "closed", now
        for rfo in ret.reverse_orders:
            rfo.status = "closed"
        order.updated_at = now
        self._emit("returns/close", self._rest_return(order, ret))
        return order, ret

    def _return_cancel(self, value: Any) -> tuple[OrderRec, ReturnRec]:
        """`returnCancel`: a REQUESTED or OPEN return is called off."""
        order, ret = self._find_return(value)
        if ret.status not in ("requested", "open"):
            raise UserFacingError(f"Return is not cancelable: it is {ret.status.upper()}.", ["id"], "INVALID_STATE")
        ret.status = "canceled"
        for rfo in ret.reverse_orders:
            rfo.status = "canceled"
        order.updated_at = self.ctx.clock.now()
        self._emit("returns/cancel", self._rest_return(order, ret))
        return order, ret

    def _m_reverse_delivery_create(
        self,
        reverseFulfillmentOrderId: str,
        reverseDeliveryLineItems: list[dict[str, Any]],
        trackingInput: dict[str, Any] | None = None,
        labelInput: dict[str, Any] | None = None,
        notifyCustomer: bool = True,
    ) -> dict[str, Any]:
        """`reverseDeliveryCreateWithShipping`: the label and tracking the customer ships the return with."""
        number = parse_gid(reverseFulfillmentOrderId, "ReverseFulfillmentOrder")
        found = next(((o, r, rfo) for o in self.orders.values() for r in o.returns for rfo in r.reverse_orders
                      if rfo.id == number), None)  # fmt: skip
        if found is None:
            error = UserFacingError("Reverse fulfillment order does not exist.", ["reverseFulfillmentOrderId"],
                                    "NOT_FOUND")  # fmt: skip
            return {"reverseDelivery": None, "userErrors": [error.as_dict()]}
        order, ret, rfo = found
        if rfo.status != "open":
            error = UserFacingError(f"Reverse fulfillment order is {rfo.status.upper()}.",
                                    ["reverseFulfillmentOrderId"], "INVALID_STATE")  # fmt: skip
            return {"reverseDelivery": None, "userErrors": [error.as_dict()]}
        totals = {line_id: next(rl.quantity for rl in ret.lines if rl.id == rl_id) for line_id, rl_id in rfo.lines}
        lines: list[tuple[int, int]] = []
        for index, item in enumerate(reverseDeliveryLineItems):
            line_id = parse_gid(item["reverseFulfillmentOrderLineItemId"], "ReverseFulfillmentOrderLineItem")
            if line_id not in totals or not 1 <= item["quantity"] <= totals[line_id]:
                error = UserFacingError("Invalid reverse fulfillment order line item or quantity.",
                                        ["reverseDeliveryLineItems", str(index)], "INVALID")  # fmt: skip
                return {"reverseDelivery": None, "userErrors": [error.as_dict()]}
            lines.append((line_id, item["quantity"]))
        tracking = trackingInput or {}
        delivery = ReverseDeliveryRec(self._next_id("reverse_delivery"), tracking.get("number"), tracking.get("url"),
                                      (labelInput or {}).get("fileUrl"), self.ctx.clock.now(), lines)  # fmt: skip
        rfo.deliveries.append(delivery)
        order.updated_at = delivery.created_at
        return {"reverseDelivery": self._v_reverse_delivery(order, ret, rfo, delivery), "userErrors": []}

    def _v_fulfillment_line(self, order: OrderRec, fulfillment_line_id: int) -> dict[str, Any]:
        line = self._fulfillment_line(order, fulfillment_line_id)
        assert line is not None
        items = {li.id: li for li in order.line_items}
        return {
            "id": gid("FulfillmentLineItem", line.id),
            "quantity": line.quantity,
            "lineItem": lambda _info: self._v_line(order, items[line.line_item_id]),
        }

    def _v_return_line(self, order: OrderRec, line: ReturnLineRec) -> dict[str, Any]:
        item = next(li for li in order.line_items if li.id == line.line_item_id)
        unit = item.price - (item.discount / item.quantity if item.quantity else Decimal(0))
        return {
            "__typename": "ReturnLineItem",
            "id": gid("ReturnLineItem", line.id),
            "quantity": line.quantity,
            "customerNote": line.customer_note,
            "returnReasonNote": line.reason_note,
            "returnReason": line.reason,
            "refundableQuantity": line.quantity,
            "refundedQuantity": 0,
            "withCodeDiscountedTotalPriceSet": self._bag(unit * line.quantity, order.currency),
            "fulfillmentLineItem": lambda _info: self._v_fulfillment_line(order, line.fulfillment_line_id),
        }

    def _v_reverse_delivery(
        self, order: OrderRec, ret: ReturnRec, rfo: ReverseFulfillmentOrderRec, d: ReverseDeliveryRec
    ) -> dict[str, Any]:
        return {
            "id": gid("ReverseDelivery", d.id),
            "deliverable": {
                "__typename": "ReverseDeliveryShippingDeliverable",
                "label": None
                if d.label_url is None
                else {"publicFileUrl": d.label_url, "createdAt": _iso(d.created_at), "updatedAt": _iso(d.created_at)},
                "tracking": {"carrierName": None, "number": d.tracking_number, "url": d.tracking_url},
            },
            "reverseFulfillmentOrder": lambda _info: self._v_reverse_order(order, ret, rfo),
            "reverseDeliveryLineItems": lambda _info, **a: connection(
                d.lines, lambda pair: {"id": gid("ReverseDeliveryLineItem", pair[0]), "quantity": pair[1]}, **a
            ),
        }

    def _v_reverse_order(self, order: OrderRec, ret: ReturnRec, rfo: ReverseFulfillmentOrderRec) -> dict[str, Any]:
        by_id = {line.id: line for line in ret.lines}
        return {
            "id": gid("ReverseFulfillmentOrder", rfo.id),
            "status": rfo.status.upper(),
            "order": lambda _info: self._v_order(order),
            "lineItems": lambda _info, **a: connection(
                rfo.lines,
                lambda pair: {
                    "id": gid("ReverseFulfillmentOrderLineItem", pair[0]),
                    "totalQuantity": by_id[pair[1]].quantity,
                    "fulfillmentLineItem": lambda _info: self._v_fulfillment_line(
                        order, by_id[pair[1]].fulfillment_line_id
                    ),
                },
                **a,
            ),
            "reverseDeliveries": lambda _info, **a: connection(
                rfo.deliveries, lambda d: self._v_reverse_delivery(order, ret, rfo, d), **a
            ),
        }

    def _v_return(self, order: OrderRec, ret: ReturnRec) -> dict[str, Any]:
        return {
            "id": gid("Return", ret.id),
            "name": ret.name,
            "status": ret.status.upper(),
            "order": lambda _info: self._v_order(order),
            "totalQuantity": ret.total_quantity,
            "createdAt": _iso(ret.created_at),
            "closedAt": _iso(ret.closed_at),
            "decline": None,
            "returnLineItems": lambda _info, **a: connection(ret.lines, lambda ln: self._v_return_line(order, ln), **a),
            "reverseFulfillmentOrders": lambda _info, **a: connection(
                ret.reverse_orders, lambda rfo: self._v_reverse_order(order, ret, rfo), **a
            ),
        }

    def _rest_return(self, order: OrderRec, ret: ReturnRec) -> dict[str, Any]:
        """A `returns/*` webhook body: ids only below the return line items, as Shopify sends them."""
        return {
            "id": ret.id,
            "admin_graphql_api_id": gid("Return", ret.id),
            "status": ret.status,
            "order": {"id": order.id, "admin_graphql_api_id": gid("Order", order.id)},
            "total_return_line_items": len(ret.lines),
            "name": ret.name,
            "return_line_items": [
                {
                    "id": line.id,
                    "admin_graphql_api_id": gid("ReturnLineItem", line.id),
                    "fulfillment_line_item": {
                        "id": line.fulfillment_line_id,
                        "admin_graphql_api_id": gid("FulfillmentLineItem", line.fulfillment_line_id),
                        "line_item": {"id": line.line_item_id,
                                      "admin_graphql_api_id": gid("LineItem", line.line_item_id)},
                    },
                    "quantity": line.quantity,
                    "return_reason": line.reason.lower(),
                    "return_reason_note": line.reason_note,
                    "customer_note": line.customer_note,
                }
                for line in ret.lines
            ],
            "return_shipping_fees": [],
            "exchange_line_items": [],
            "total_exchange_line_items": 0,
        }  # fmt: skip

    # -- what people do in Shopify (sandbox-only routes) ---------------------------------------

    def _sandbox_order(self, body: dict[str, Any]) -> OrderRec:
        raw = body.get("order_id")
        order = self.orders.get(int(str(raw))) if str(raw).isdigit() else self._order_of(raw)
        if order is None:
            raise UserFacingError(f"Order {raw} does not exist.", ["order_id"], "NOT_FOUND")
        return order

    def _simulate_return_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """A customer asks for a return from the order status page: `lines` are SKUs and quantities.

        The units are taken from the order's fulfillments, oldest first, as the customer picks them.
        """
        order = self._sandbox_order(body)
        items: list[dict[str, Any]] = []
        for index, wanted in enumerate(body.get("lines") or []):
            sku, left = str(wanted.get("sku") or ""), int(wanted.get("quantity") or 0)
            reason = str(wanted.get("reason") or "UNWANTED").upper()
            for f in order.fulfillments:
                for fl in f.lines:
                    item = next(li for li in order.line_items if li.id == fl.line_item_id)
                    free = fl.quantity - self._returning(order, fl.id) - sum(
                        i["quantity"] for i in items if i["fulfillmentLineItemId"] == gid("FulfillmentLineItem", fl.id)
                    )  # fmt: skip
                    take = min(left, free) if item.sku == sku else 0
                    if take > 0:
                        items.append({"fulfillmentLineItemId": gid("FulfillmentLineItem", fl.id), "quantity": take,
                                      "returnReason": reason, "customerNote": wanted.get("note")})  # fmt: skip
                        left -= take
            if left > 0:
                raise UserFacingError(f"{sku} has {left} unit(s) too many to return: not fulfilled or already "
                                      "returned.", ["lines", str(index), "quantity"], "GREATER_THAN")  # fmt: skip
        order, ret = self._return_request({"orderId": gid("Order", order.id), "returnLineItems": items})
        return self._rest_return(order, ret)

    def _simulate_return_approval(self, return_id: str) -> dict[str, Any]:
        """Staff approve a requested return in the admin."""
        order, ret = self._return_approve(gid("Return", return_id) if return_id.isdigit() else return_id)
        return self._rest_return(order, ret)

    def _simulate_admin_refund(self, body: dict[str, Any]) -> dict[str, Any]:
        """Staff refund in the admin: units at what they sold for, with their tax, plus any shipping.

        `lines` are [{sku, quantity, restock}]; `shipping` an amount; `amount` overrides the total
        refunded (a goodwill refund). The refund carries the staff's note, never orderflow's marker.
        """
        order = self._sandbox_order(body)
        refund_lines: list[dict[str, Any]] = []
        total = Decimal(0)
        for index, wanted in enumerate(body.get("lines") or []):
            sku, quantity = str(wanted.get("sku") or ""), int(wanted.get("quantity") or 0)
            line = next((li for li in order.line_items if li.sku == sku), None)
            if line is None:
                raise UserFacingError(f"{sku} is not on order {order.id}.", ["lines", str(index), "sku"], "NOT_FOUND")
            unit_net = line.price - line.discount / line.quantity
            unit_tax = sum((t.amount for t in line.tax_lines), Decimal(0)) / line.quantity
            total += _money(unit_net * quantity) + _money(unit_tax * quantity)
            refund_lines.append({"lineItemId": gid("LineItem", line.id), "quantity": quantity,
                                 "restockType": "RETURN" if wanted.get("restock") else "NO_RESTOCK"})  # fmt: skip
        shipping = _amount(body.get("shipping") or 0)
        total += shipping
        if body.get("amount") is not None:
            total = _amount(body["amount"])
        sale = next((t for t in order.transactions if t.kind in ("sale", "capture") and t.status == "success"), None)
        data: dict[str, Any] = {
            "orderId": gid("Order", order.id),
            "note": body.get("note") or "Refunded by staff",
            "refundLineItems": refund_lines,
            "shipping": {"amount": str(shipping)},
        }
        if sale is not None and total > 0:
            data["transactions"] = [{"orderId": gid("Order", order.id), "parentId": gid("OrderTransaction", sale.id),
                                     "amount": str(total), "gateway": sale.gateway, "kind": "REFUND"}]  # fmt: skip
        order, refund = self._refund_create(data)
        return self._rest_refund(order, refund)

    # -- inventory -----------------------------------------------------------------------------

    def _inventory_target(self, item_gid: Any, location_gid: Any, where: list[str]) -> tuple[int, int]:
        item_id = parse_gid(item_gid, "InventoryItem")
        location_id = parse_gid(location_gid, "Location")
        if item_id is None or all(i.shopify_inventory_item_id != item_id for i in seed.CATALOG):
            raise UserFacingError(
                "The specified inventory item could not be found.",
                [*where, "inventoryItemId"],
                "INVALID_INVENTORY_ITEM",
            )
        if location_id is None or self._location_name(location_id) is None:
            raise UserFacingError(
                "The specified location could not be found.", [*where, "locationId"], "INVALID_LOCATION"
            )
        return item_id, location_id

    def _check_reason_and_name(self, data: dict[str, Any], names: tuple[str, ...]) -> None:
        if data["reason"] not in INVENTORY_REASONS:
            raise UserFacingError("The specified reason is invalid.", ["input", "reason"], "INVALID_REASON")
        if data["name"] not in names:
            raise UserFacingError(
                "The quantity name must be one of " + ", ".join(names), ["input", "name"], "INVALID_NAME"
            )

    def _adjustment_group(self, data: dict[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
        group = {
            "id": gid("InventoryAdjustmentGroup", self._next_id("adjustment_group")),
            "createdAt": _iso(self.ctx.clock.now()),
            "reason": data["reason"],
            "referenceDocumentUri": data.get("referenceDocumentUri"),
            "changes": changes,
        }
        self.adjustment_groups.append({k: v for k, v in group.items() if k != "changes"})
        return group

    def _m_inventory_adjust(self, input: dict[str, Any]) -> dict[str, Any]:
        try:
            self._check_reason_and_name(input, ("available", "on_hand"))
            targets = [
                (
                    self._inventory_target(c["inventoryItemId"], c["locationId"], ["input", "changes", str(i)]),
                    c["delta"],
                )
                for i, c in enumerate(input["changes"])
            ]
        except UserFacingError as error:
            return self._user_errors(error, ("inventoryAdjustmentGroup",))
        now = self.ctx.clock.now()
        changes = []
        for (item_id, location_id), delta in targets:
            stock = self._stock(item_id, location_id)
            stock.on_hand += delta
            stock.updated_at = now
            after = stock.available if input["name"] == "available" else stock.on_hand
            item = self._item_by_inventory_id(item_id)
            changes.append(
                {
                    "name": input["name"],
                    "delta": delta,
                    "quantityAfterChange": after,
                    "item": lambda _info, i=item: self._v_inventory_item(i),
                    "location": self._v_location(location_id),
                }
            )
        return {"inventoryAdjustmentGroup": self._adjustment_group(input, changes), "userErrors": []}

    def _m_inventory_set(self, input: dict[str, Any]) -> dict[str, Any]:
        try:
            self._check_reason_and_name(input, ("available", "on_hand"))
            plan = []
            for i, q in enumerate(input["quantities"]):
                where = ["input", "quantities", str(i)]
                item_id, location_id = self._inventory_target(q["inventoryItemId"], q["locationId"], where)
                stock = self._stock(item_id, location_id)
                current = stock.available if input["name"] == "available" else stock.on_hand
                compare = q.get("changeFromQuantity", q.get("compareQuantity"))
                if not input.get("ignoreCompareQuantity"):
                    if compare is None:
                        raise UserFacingError(
                            "The compareQuantity argument must be given to each quantity or ignored using "
                            "ignoreCompareQuantity.",
                            [*where, "compareQuantity"],
                            "COMPARE_QUANTITY_REQUIRED",
                        )
                    if compare != current:
                        raise UserFacingError(
                            "The specified compare quantity does not match the current quantity.",
                            [*where, "compareQuantity"],
                            "COMPARE_QUANTITY_STALE",
                        )
                plan.append((item_id, location_id, stock, current, q["quantity"]))
        except UserFacingError as error:
            return self._user_errors(error, ("inventoryAdjustmentGroup",))
        now = self.ctx.clock.now()
        changes = []
        for item_id, location_id, stock, current, quantity in plan:
            stock.on_hand += quantity - current
            stock.updated_at = now
            item = self._item_by_inventory_id(item_id)
            changes.append(
                {
                    "name": input["name"],
                    "delta": quantity - current,
                    "quantityAfterChange": quantity,
                    "item": lambda _info, i=item: self._v_inventory_item(i),
                    "location": self._v_location(location_id),
                }
            )
        return {"inventoryAdjustmentGroup": self._adjustment_group(input, changes), "userErrors": []}

    # -- webhook subscriptions -----------------------------------------------------------------

    def _live_subscriptions(self) -> list[Subscription]:
        return [s for s in self.ctx.outbox.subscriptions_of(self.name) if not s.deleted]

    def _v_webhook(self, sub: Subscription) -> dict[str, Any]:
        created = sub.extra.get("created_at")
        return {
            "id": sub.id,
            "topic": TOPIC_ENUMS.get(sub.topics[0], "ORDERS_CREATE"),
            "format": "JSON",
            "callbackUrl": sub.url,
            "uri": sub.url,
            "includeFields": [],
            "createdAt": created,
            "updatedAt": created,
        }

    def _q_webhook(self, value: Any) -> dict[str, Any] | None:
        sub = self.ctx.outbox.subscriptions.get(str(value))
        return self._v_webhook(sub) if sub is not None and sub.system == self.name and not sub.deleted else None

    def _m_webhook_create(self, version: str, topic: str, webhookSubscription: dict[str, Any]) -> dict[str, Any]:
        url = webhookSubscription.get("uri") or webhookSubscription.get("callbackUrl")
        if not url or not re.match(r"^https?://", str(url)):
            error = {"field": ["webhookSubscription", "callbackUrl"], "message": "Address is invalid"}
            return {"webhookSubscription": None, "userErrors": [error]}
        topic_name = TOPICS[topic]
        if any(s.url == url and topic_name in s.topics for s in self._live_subscriptions()):
            error = {
                "field": ["webhookSubscription", "callbackUrl"],
                "message": "Address for this topic has already been taken",
            }
            return {"webhookSubscription": None, "userErrors": [error]}
        number = self._next_id("webhook_subscription")
        sub = self.ctx.outbox.subscribe(
            self.name,
            [topic_name],
            str(url),
            secret=self.ctx.config.shopify_client_secret,
            subscription_id=gid("WebhookSubscription", number),
            extra={"api_version": version, "created_at": _iso(self.ctx.clock.now())},
        )
        return {"webhookSubscription": self._v_webhook(sub), "userErrors": []}

    def _m_webhook_delete(self, id: str) -> dict[str, Any]:
        sub = self.ctx.outbox.subscriptions.get(id)
        if sub is None or sub.system != self.name or sub.deleted:
            return {
                "deletedWebhookSubscriptionId": None,
                "userErrors": [{"field": ["id"], "message": "Webhook subscription does not exist"}],
            }
        self.ctx.outbox.unsubscribe(id)
        return {"deletedWebhookSubscriptionId": id, "userErrors": []}

    # -- webhooks: bodies, emission, signing ---------------------------------------------------

    def _emit(self, topic: str, payload: dict[str, Any]) -> None:
        self.ctx.outbox.emit(self.name, topic, payload, event_id=self._uuid())

    def _sign(self, sub: Subscription, delivery: Delivery, raw: bytes, _now: datetime) -> dict[str, str]:
        secret = (sub.secret or self.ctx.config.shopify_client_secret).encode()
        digest = base64.b64encode(hmac.new(secret, raw, hashlib.sha256).digest()).decode()
        return {
            "X-Shopify-Topic": delivery.topic,
            "X-Shopify-Hmac-Sha256": digest,
            "X-Shopify-Shop-Domain": SHOP_DOMAIN,
            "X-Shopify-API-Version": str(sub.extra.get("api_version", DEFAULT_API_VERSION)),
            "X-Shopify-Webhook-Id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"shopify-delivery:{delivery.id}")),
            "X-Shopify-Event-Id": delivery.event_id,
            "X-Shopify-Triggered-At": _iso(delivery.created_at) or "",
        }

    def _rest_money_set(self, amount: Decimal, currency: str) -> dict[str, Any]:
        money = {"amount": str(_money(amount)), "currency_code": currency}
        return {"shop_money": money, "presentment_money": money}

    def _rest_tax(self, tax: TaxRec, currency: str) -> dict[str, Any]:
        return {
            "title": tax.title,
            "rate": float(tax.rate),
            "price": str(_money(tax.amount)),
            "price_set": self._rest_money_set(tax.amount, currency),
        }

    def _rest_line(self, order: OrderRec, li: LineItemRec) -> dict[str, Any]:
        return {
            "id": li.id,
            "admin_graphql_api_id": gid("LineItem", li.id),
            "variant_id": li.variant_id,
            "product_id": li.product_id,
            "sku": li.sku,
            "name": li.name,
            "title": li.name.split(" (")[0],
            "quantity": li.quantity,
            "current_quantity": li.quantity - order.refunded_quantity(li.id),
            "price": str(_money(li.price)),
            "price_set": self._rest_money_set(li.price, order.currency),
            "total_discount": "0.00",
            "fulfillable_quantity": max(0, li.quantity - order.fulfilled_quantity(li.id)),
            "fulfillment_status": None
            if order.fulfilled_quantity(li.id) == 0
            else ("fulfilled" if order.fulfilled_quantity(li.id) >= li.quantity else "partial"),
            "requires_shipping": li.requires_shipping,
            "taxable": bool(li.tax_lines),
            "tax_lines": [self._rest_tax(t, order.currency) for t in li.tax_lines],
            "discount_allocations": [
                {
                    "amount": str(_money(li.discount)),
                    "amount_set": self._rest_money_set(li.discount, order.currency),
                    "discount_application_index": li.discount_index,
                }
            ]
            if li.discount and li.discount_index is not None
            else [],
        }

    def _rest_order(self, order: OrderRec) -> dict[str, Any]:
        cur = order.currency
        status = order.fulfillment_status()
        customer = order.customer
        return {
            "id": order.id,
            "admin_graphql_api_id": gid("Order", order.id),
            "name": order.name,
            "order_number": order.number,
            "number": order.number - 1000,
            "email": order.email,
            "contact_email": order.email,
            "phone": order.phone,
            "note": order.note,
            "tags": ", ".join(order.tags),
            "created_at": _local(order.created_at),
            "updated_at": _local(order.updated_at),
            "processed_at": _local(order.created_at),
            "closed_at": _local(order.closed_at),
            "cancelled_at": _local(order.cancelled_at),
            "cancel_reason": order.cancel_reason,
            "currency": cur,
            "presentment_currency": cur,
            "taxes_included": False,
            "total_price": str(_money(order.total_price)),
            "total_price_set": self._rest_money_set(order.total_price, cur),
            "subtotal_price": str(_money(order.subtotal)),
            "subtotal_price_set": self._rest_money_set(order.subtotal, cur),
            "total_line_items_price": str(_money(order.line_total)),
            "total_tax": str(_money(order.total_tax)),
            "total_tax_set": self._rest_money_set(order.total_tax, cur),
            "total_discounts": str(_money(order.total_discounts)),
            "total_discounts_set": self._rest_money_set(order.total_discounts, cur),
            "total_shipping_price_set": self._rest_money_set(order.total_shipping, cur),
            "financial_status": order.financial_status,
            "fulfillment_status": "fulfilled" if status == "fulfilled" else ("partial" if status else None),
            "tax_lines": [self._rest_tax(t, cur) for t in order.aggregated_tax_lines()],
            "discount_codes": [
                {"code": a.code, "amount": str(_money(order.total_discounts)), "type": a.value_type}
                for a in order.discount_apps
                if a.code
            ],
            "discount_applications": [
                {
                    "type": "discount_code" if a.code else "manual",
                    "code": a.code,
                    "title": a.title,
                    "value": str(a.value),
                    "value_type": a.value_type,
                    "allocation_method": a.allocation_method,
                    "target_selection": "all",
                    "target_type": a.target_type,
                }
                for a in order.discount_apps
            ],
            "line_items": [self._rest_line(order, li) for li in order.line_items],
            "shipping_lines": [
                {
                    "id": s.id,
                    "title": s.title,
                    "code": s.code,
                    "source": "shopify",
                    "price": str(_money(s.price)),
                    "price_set": self._rest_money_set(s.price, cur),
                    "discounted_price": str(_money(s.price)),
                    "tax_lines": [self._rest_tax(t, cur) for t in s.tax_lines],
                    "discount_allocations": [],
                }
                for s in order.shipping_lines
            ],
            "shipping_address": order.shipping_address,
            "billing_address": order.billing_address,
            "customer": None
            if customer is None
            else {
                "id": customer["id"],
                "email": customer.get("email"),
                "first_name": customer.get("first_name"),
                "last_name": customer.get("last_name"),
                "phone": customer.get("phone"),
                "admin_graphql_api_id": gid("Customer", customer["id"]),
            },
            "payment_terms": order.payment_terms,
            "refunds": [],
        }

    def _rest_fulfillment(self, order: OrderRec, f: FulfillmentRec) -> dict[str, Any]:
        lines = {li.id: li for li in order.line_items}
        return {
            "id": f.id,
            "admin_graphql_api_id": gid("Fulfillment", f.id),
            "order_id": order.id,
            "name": f.name,
            "status": f.status,
            "service": "manual",
            "location_id": f.location_id,
            "created_at": _local(f.created_at),
            "updated_at": _local(f.created_at),
            "tracking_company": f.tracking_company,
            "tracking_number": f.tracking_numbers[0] if f.tracking_numbers else None,
            "tracking_numbers": f.tracking_numbers,
            "tracking_url": f.tracking_urls[0] if f.tracking_urls else None,
            "tracking_urls": f.tracking_urls,
            "shipment_status": None,
            "line_items": [
                {**self._rest_line(order, lines[fl.line_item_id]), "quantity": fl.quantity} for fl in f.lines
            ],
        }

    def _rest_refund(self, order: OrderRec, r: RefundRec) -> dict[str, Any]:
        lines = {li.id: li for li in order.line_items}
        return {
            "id": r.id,
            "admin_graphql_api_id": gid("Refund", r.id),
            "order_id": order.id,
            "created_at": _local(r.created_at),
            "processed_at": _local(r.created_at),
            "note": r.note,
            "restock": r.restock,
            "refund_line_items": [
                {
                    "id": rl.id,
                    "line_item_id": rl.line_item_id,
                    "quantity": rl.quantity,
                    "restock_type": rl.restock_type,
                    "location_id": rl.location_id,
                    "subtotal": float(rl.subtotal),
                    "subtotal_set": self._rest_money_set(rl.subtotal, order.currency),
                    "total_tax": float(rl.total_tax),
                    "total_tax_set": self._rest_money_set(rl.total_tax, order.currency),
                    "line_item": {
                        "id": rl.line_item_id,
                        "sku": lines[rl.line_item_id].sku,
                        "variant_id": lines[rl.line_item_id].variant_id,
                        "name": lines[rl.line_item_id].name,
                        "quantity": lines[rl.line_item_id].quantity,
                        "price": str(_money(lines[rl.line_item_id].price)),
                    },
                }
                for rl in r.lines
            ],
            "transactions": [
                {
                    "id": t.id,
                    "order_id": order.id,
                    "kind": t.kind,
                    "gateway": t.gateway,
                    "status": t.status,
                    "amount": str(_money(t.amount)),
                    "currency": order.currency,
                    "parent_id": t.parent_id,
                    "created_at": _local(t.created_at),
                }
                for t in r.transactions
            ],
            "order_adjustments": [
                {
                    "kind": "shipping_refund",
                    "amount": str(_money(-r.shipping)),
                    "tax_amount": "0.00",
                    "reason": "Shipping refund",
                }
            ]
            if r.shipping
            else [],
        }


# --- Search syntax and small helpers ---------------------------------------------------------------

_TERM = re.compile(r"(?P<key>[a-z_]+):(?P<op>>=|<=|>|<)?(?P<value>\"[^\"]*\"|'[^']*'|\S+)")


def _search_terms(query: str | None) -> list[tuple[str, str, str]]:
    """`key:value` terms of Shopify's search syntax (quoted values allowed); free text is ignored."""
    if not query:
        return []
    return [(m["key"], m["op"] or "=", m["value"].strip("\"'")) for m in _TERM.finditer(query)]


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == ">":
        return bool(left > right)
    if op == ">=":
        return bool(left >= right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    return bool(left == right)


def _order_matches(order: OrderRec, terms: list[tuple[str, str, str]]) -> bool:
    for key, op, value in terms:
        if key == "name" and order.name.lstrip("#") != value.lstrip("#"):
            return False
        if key == "email" and (order.email or "").lower() != value.lower():
            return False
        if key == "id" and not _compare(order.id, op, int(value) if value.isdigit() else -1):
            return False
        if key == "financial_status" and order.financial_status != value.lower():
            return False
        if key == "fulfillment_status":
            actual = order.fulfillment_status() or "unshipped"
            if actual != value.lower():
                return False
        if key == "status":
            state = "cancelled" if order.cancelled_at else ("closed" if order.closed_at else "open")
            if value.lower() != "any" and state != value.lower():
                return False
        if key == "sku" and all(li.sku != value for li in order.line_items):
            return False
        if key in ("created_at", "updated_at"):
            try:
                bound = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if bound.tzinfo is None:
                bound = bound.replace(tzinfo=UTC)
            if not _compare(getattr(order, key), op, bound):
                return False
    return True


def _rest_address(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """A GraphQL `MailingAddressInput` as the REST address the order stores."""
    if not data:
        return None
    first, last = data.get("firstName"), data.get("lastName")
    return {
        "first_name": first,
        "last_name": last,
        "name": " ".join(p for p in (first, last) if p) or None,
        "company": data.get("company"),
        "address1": data.get("address1"),
        "address2": data.get("address2"),
        "city": data.get("city"),
        "province": data.get("provinceCode"),
        "province_code": data.get("provinceCode"),
        "zip": data.get("zip"),
        "country": data.get("countryCode"),
        "country_code": data.get("countryCode"),
        "phone": data.get("phone"),
    }


def _json_object(raw: bytes) -> dict[str, Any]:
    """A sandbox route's JSON body; anything but an object is an empty one."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

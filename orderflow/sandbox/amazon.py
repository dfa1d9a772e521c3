"""The Amazon SP-API simulator: LWA, Orders 2026-01-01 and v0 confirmShipment, restricted data tokens,
Feeds 2021-06-30 (order acknowledgement and payment adjustment), Listings Items availability, and
per-operation token buckets with Amazon's rate-limit headers.

Everything runs on the sandbox clock: access tokens expire after an hour of it, feeds move
IN_QUEUE -> IN_PROGRESS -> DONE as it advances, and token buckets refill with it. Routes under
`/amazon/sandbox/...` are sandbox-only: they do what buyers and Amazon do (place orders, ask to
cancel) and let tests scale the rate limits. See docs/adapters/amazon.md.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import json
import re
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from orderflow.sandbox import seed
from orderflow.sandbox.core import SandboxContext, Simulator
from orderflow.sandbox.faults import FaultKind, FaultRule

# Documented usage plans (requests per second, burst), per operation.
RATE_LIMITS: dict[str, tuple[float, int]] = {
    "searchOrders": (0.0056, 20),
    "getOrder": (0.5, 30),
    "confirmShipment": (2.0, 10),
    "createRestrictedDataToken": (1.0, 10),
    "createFeedDocument": (0.5, 15),
    "createFeed": (0.0083, 15),
    "getFeed": (2.0, 15),
    "getFeedDocument": (0.0222, 10),
    "patchListingsItem": (5.0, 5),
}
TAX_RATE = Decimal("0.0825")
# The newest rate-limited calls kept for tests that check a client backs off after a 429.
CALL_LOG_SIZE = 2000
CENT = Decimal("0.01")
ORDER_STATUSES = ("PENDING", "UNSHIPPED", "PARTIALLY_SHIPPED", "SHIPPED", "CANCELLED")
_BUYERS = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth")
_ADDRESSES = (
    ("12 Elm St", "Canton", "MI", "48817"),
    ("400 Pine Ave", "Seattle", "WA", "98101"),
    ("77 Oak Rd", "Austin", "TX", "78701"),
    ("5 Birch Ln", "Denver", "CO", "80202"),
)


class SpApiError(Exception):
    """An SP-API failure in Amazon's `{"errors": [...]}` envelope."""

    def __init__(self, status: int, code: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def envelope(self) -> dict[str, Any]:
        """The body Amazon sends with this error."""
        return {"errors": [{"code": self.code, "message": self.message, "details": self.details}]}


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(amount: Decimal) -> dict[str, str]:
    return {"amount": str(amount.quantize(CENT)), "currencyCode": "USD"}


def _parse_time(raw: str, name: str) -> datetime:
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise SpApiError(400, "InvalidInput", f"{name} is not an ISO 8601 date-time.") from None
    if when.tzinfo is None:
        raise SpApiError(400, "InvalidInput", f"{name} must carry a time zone.")
    return when


def _list_param(request: Request, name: str) -> list[str]:
    # Amazon takes arrays as comma lists; repeated parameters are accepted too.
    return [v for raw in request.query_params.getlist(name) for v in raw.split(",") if v]


@dataclass
class _Item:
    order_item_id: str
    sku: str
    title: str
    quantity: int
    unit_price: Decimal
    shipped: int = 0
    cancel_requested: bool = False
    cancel_reason: str | None = None
    cancelled: bool = False
    refunded: Decimal = Decimal(0)

    @property
    def line_price(self) -> Decimal:
        return self.unit_price * self.quantity

    @property
    def tax(self) -> Decimal:
        return (self.line_price * TAX_RATE).quantize(CENT)


@dataclass
class _Order:
    order_id: str
    marketplace_id: str
    fulfilled_by: str  # "MERCHANT" (MFN) or "AMAZON" (AFN)
    created: datetime
    updated: datetime
    status: str
    items: list[_Item]
    buyer_name: str
    buyer_email: str
    street: str
    city: str
    state: str
    postal_code: str
    phone: str
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: bool = False
    cancelled_by: str | None = None
    refunds: list[dict[str, Any]] = field(default_factory=list)
    cancel_request_due: datetime | None = None
    cancel_request_reason: str = ""

    @property
    def mfn(self) -> bool:
        return self.fulfilled_by == "MERCHANT"


@dataclass
class _Feed:
    feed_id: str
    feed_type: str
    marketplace_ids: list[str]
    document_id: str
    created: datetime
    status: str = "IN_QUEUE"
    started: datetime | None = None
    ended: datetime | None = None
    result_document_id: str | None = None
    effects: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _State:
    orders: dict[str, _Order] = field(default_factory=dict)
    access_tokens: dict[str, datetime] = field(default_factory=dict)
    rdts: dict[str, tuple[datetime, list[dict[str, Any]]]] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    feeds: dict[str, _Feed] = field(default_factory=dict)
    listings: dict[str, int] = field(default_factory=dict)
    listing_submissions: list[dict[str, Any]] = field(default_factory=list)
    page_cursors: dict[str, tuple[list[str], int, str]] = field(default_factory=dict)
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    calls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CALL_LOG_SIZE))
    rate_scale: float | None = None
    requests: int = 0
    serial: int = 0
    demo_credit: float = 0.0
    demo_last_tick: datetime | None = None


class AmazonSimulator(Simulator):
    """Amazon SP-API as orderflow uses it: orders, shipment confirmation, feeds, listings, LWA and RDTs."""

    name = "amazon"
    read_only_posts = ("/auth/o2/token", "/tokens/2021-03-01/restrictedDataToken")

    def __init__(self, ctx: SandboxContext) -> None:
        super().__init__(ctx)
        self.state = _State()

    # -- Simulator contract -------------------------------------------------------------------

    def reset(self) -> None:
        """No orders, tokens or feeds; listings back to the seed catalogue's total stock; buckets full."""
        self.state = _State()
        for item in seed.CATALOG:
            self.state.listings[item.sku] = sum(item.stock.values())

    def snapshot(self) -> dict[str, Any]:
        """Orders with status, items, shipments, cancellations and refunds; feeds and their effects; listings."""
        return {
            "seller_id": self.ctx.config.amazon_seller_id,
            "rate_scale": self._rate_scale,
            "orders": [self._order_summary(o) for o in self.state.orders.values()],
            "feeds": [
                {
                    "feedId": f.feed_id,
                    "feedType": f.feed_type,
                    "processingStatus": f.status,
                    "inputFeedDocumentId": f.document_id,
                    "resultFeedDocumentId": f.result_document_id,
                    "effects": list(f.effects),
                    "errors": list(f.errors),
                }
                for f in self.state.feeds.values()
            ],
            "listings": dict(self.state.listings),
            "listing_submissions": copy.deepcopy(self.state.listing_submissions),
            "throttled": dict(self.state.throttled),
            "calls": list(self.state.calls),
        }

    def fault_response(self, kind: FaultKind, rule: FaultRule) -> tuple[int, dict[str, str], bytes]:
        """An injected failure in SP-API's error envelope (a throttle is 429 QuotaExceeded)."""
        if kind is FaultKind.THROTTLE:
            error = SpApiError(429, "QuotaExceeded", "You exceeded your quota for the requested resource.")
        else:
            error = SpApiError(rule.status, "InternalFailure", "We encountered an internal error. Please try again.")
        headers = {"content-type": "application/json", "x-amzn-RequestId": self._request_id()}
        return error.status, headers, json.dumps(error.envelope()).encode()

    async def tick(self, now: datetime) -> None:
        """Deliver due buyer cancellation requests, process feeds, and in demo mode place orders."""
        self._advance(now)
        demo = self.ctx.config.demo
        rate = demo.amazon_orders_per_minute
        if rate <= 0 or self.state.demo_last_tick is None:
            self.state.demo_last_tick = now
            return
        elapsed = max(0.0, (now - self.state.demo_last_tick).total_seconds())
        self.state.demo_last_tick = now
        self.state.demo_credit += elapsed * rate / 60.0
        dice = self.ctx.random
        while self.state.demo_credit >= 1.0:
            self.state.demo_credit -= 1.0
            afn = dice.random() < demo.amazon_afn_share
            count = dice.randint(1, 3)
            lines = [(item.sku, dice.randint(1, 3)) for item in dice.sample(self._plentiful_catalogue(), count)]
            order = self._create_order("AFN" if afn else "MFN", lines)
            if not afn and dice.random() < demo.amazon_buyer_cancel_share:
                order.cancel_request_due = now + timedelta(seconds=demo.amazon_buyer_cancel_after_seconds)
                order.cancel_request_reason = "Buyer changed their mind"

    # -- HTTP plumbing --------------------------------------------------------------------------

    def router(self) -> APIRouter:
        """SP-API's routes, LWA's token endpoint, the presigned feed document URLs and sandbox-only routes."""
        router = APIRouter()
        serve = self._serve

        @router.post("/auth/o2/token")
        async def lwa_token(request: Request) -> Response:
            return await self._lwa(request)

        @router.get("/orders/2026-01-01/orders")
        async def search_orders(request: Request) -> Response:
            return await serve(request, "searchOrders", lambda _b: (200, self._search_orders(request)))

        @router.get("/orders/2026-01-01/orders/{order_id}")
        async def get_order(request: Request, order_id: str) -> Response:
            return await serve(request, "getOrder", lambda _b: (200, self._get_order(request, order_id)))

        @router.post("/orders/v0/orders/{order_id}/shipmentConfirmation")
        async def confirm_shipment(request: Request, order_id: str) -> Response:
            return await serve(request, "confirmShipment", lambda body: self._confirm_shipment(order_id, body))

        @router.post("/tokens/2021-03-01/restrictedDataToken")
        async def restricted_data_token(request: Request) -> Response:
            return await serve(request, "createRestrictedDataToken", lambda body: (200, self._create_rdt(body)))

        @router.post("/feeds/2021-06-30/documents")
        async def create_feed_document(request: Request) -> Response:
            return await serve(request, "createFeedDocument", lambda body: (201, self._create_document(request, body)))

        @router.get("/feeds/2021-06-30/documents/{document_id}")
        async def get_feed_document(request: Request, document_id: str) -> Response:
            return await serve(request, "getFeedDocument", lambda _b: (200, self._document_json(request, document_id)))

        @router.post("/feeds/2021-06-30/feeds")
        async def create_feed(request: Request) -> Response:
            return await serve(request, "createFeed", lambda body: (202, self._create_feed(body)))

        @router.get("/feeds/2021-06-30/feeds/{feed_id}")
        async def get_feed(request: Request, feed_id: str) -> Response:
            return await serve(request, "getFeed", lambda _b: (200, self._feed_json(feed_id)))

        @router.patch("/listings/2021-08-01/items/{seller_id}/{sku}")
        async def patch_listing(request: Request, seller_id: str, sku: str) -> Response:
            return await serve(
                request, "patchListingsItem", lambda body: self._patch_listing(request, seller_id, sku, body)
            )

        # Presigned storage URLs: like S3's, they need no SP-API token.
        @router.put("/_documents/{document_id}")
        async def upload_document(request: Request, document_id: str) -> Response:
            doc = self.state.documents.get(document_id)
            if doc is None:
                return Response(status_code=404)
            doc["content"] = await request.body()
            doc["uploaded_content_type"] = request.headers.get("content-type", "")
            return Response(status_code=200)

        @router.get("/_documents/{document_id}")
        async def download_document(document_id: str) -> Response:
            doc = self.state.documents.get(document_id)
            if doc is None or doc.get("content") is None:
                return Response(status_code=404)
            return Response(doc["content"], media_type=doc.get("contentType", "text/xml"))

        # Sandbox-only: what buyers and Amazon do, and the knob for throttling tests.
        @router.post("/sandbox/orders", status_code=201)
        async def sandbox_create_order(request: Request) -> Response:
            return await self._sandbox(request, self._sandbox_create_order)

        @router.post("/sandbox/orders/{order_id}/buyer-cancellation")
        async def sandbox_buyer_cancel(request: Request, order_id: str) -> Response:
            return await self._sandbox(request, lambda body: self._sandbox_buyer_cancel(order_id, body))

        @router.put("/sandbox/rate-scale")
        async def sandbox_rate_scale(request: Request) -> Response:
            return await self._sandbox(request, self._sandbox_rate_scale)

        return router

    async def _serve(
        self,
        request: Request,
        operation: str,
        action: Callable[[dict[str, Any]], tuple[int, Any]],
    ) -> Response:
        self._advance(self.ctx.clock.now())
        headers = {"x-amzn-RequestId": self._request_id()}
        try:
            self._authenticate(request)
            limit = self._take(operation)
            headers["x-amzn-RateLimit-Limit"] = limit
            body = await self._json_body(request)
            status, payload = action(body)
        except SpApiError as exc:
            status, payload = exc.status, exc.envelope()
        self.state.calls.append({"operation": operation, "at": self.ctx.clock.timestamp(), "status": status})
        if status == 204:
            return Response(status_code=204, headers=headers)
        return JSONResponse(payload, status_code=status, headers=headers)

    async def _sandbox(self, request: Request, action: Callable[[dict[str, Any]], tuple[int, Any]]) -> Response:
        try:
            status, payload = action(await self._json_body(request))
        except SpApiError as exc:
            status, payload = exc.status, exc.envelope()
        return JSONResponse(payload, status_code=status)

    def _request_id(self) -> str:
        # A counter, not the shared dice: reading must not change which ids later writes get.
        self.state.requests += 1
        return f"{self.state.requests:08x}-a4f1-4c2e-9000-{self.state.requests:012x}"

    def _next(self) -> int:
        self.state.serial += 1
        return self.state.serial

    @staticmethod
    async def _json_body(request: Request) -> dict[str, Any]:
        if request.method in {"GET", "DELETE"}:
            return {}
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise SpApiError(400, "InvalidInput", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise SpApiError(400, "InvalidInput", "The request body must be a JSON object.")
        return body

    # -- Login with Amazon and authorisation ----------------------------------------------------

    async def _lwa(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        cfg = self.ctx.config

        def oauth_error(status: int, error: str, description: str) -> Response:
            return JSONResponse({"error": error, "error_description": description}, status_code=status)

        if (
            form.get("client_id") != cfg.amazon_lwa_client_id
            or form.get("client_secret") != cfg.amazon_lwa_client_secret
        ):
            return oauth_error(401, "invalid_client", "Client authentication failed")
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if form.get("refresh_token") != cfg.amazon_refresh_token:
                return oauth_error(400, "invalid_grant", "The request has an invalid grant parameter : refresh_token")
        elif grant == "client_credentials":
            if form.get("scope") not in {
                "sellingpartnerapi::notifications",
                "sellingpartnerapi::client_credential:rotation",
            }:
                return oauth_error(400, "invalid_scope", "The request has an invalid parameter : scope")
        else:
            return oauth_error(400, "unsupported_grant_type", "Invalid grant_type")
        token = f"Atza|sandbox-{self.ctx.ids.getrandbits(96):024x}"
        ttl = cfg.amazon_access_token_ttl_seconds
        self.state.access_tokens[token] = self.ctx.clock.now() + timedelta(seconds=ttl)
        body: dict[str, Any] = {"access_token": token, "token_type": "bearer", "expires_in": ttl}
        if grant == "refresh_token":
            body["refresh_token"] = cfg.amazon_refresh_token
        return JSONResponse(body, headers={"cache-control": "no-store"})

    def _authenticate(self, request: Request) -> None:
        token = request.headers.get("x-amz-access-token", "")
        denied = "Access to requested resource is denied."
        if not token:
            raise SpApiError(403, "Unauthorized", denied, "The request has no x-amz-access-token header.")
        now = self.ctx.clock.now()
        expiry = self.state.access_tokens.get(token)
        if expiry is not None:
            if expiry <= now:
                raise SpApiError(403, "Unauthorized", denied, "The access token you provided has expired.")
            return
        rdt = self.state.rdts.get(token)
        if rdt is None:
            raise SpApiError(
                403, "Unauthorized", denied, "The access token you provided is revoked, malformed or invalid."
            )
        expires, resources = rdt
        if expires <= now:
            raise SpApiError(403, "Unauthorized", denied, "The restricted data token you provided has expired.")
        path = self._sp_path(request)
        if not any(self._covers(r, request.method, path) for r in resources):
            raise SpApiError(403, "Unauthorized", denied, "The restricted data token does not cover this resource.")

    @staticmethod
    def _sp_path(request: Request) -> str:
        # The path as SP-API sees it, without the sandbox's `/amazon` mount.
        path = request.url.path
        return path[len("/amazon") :] if path.startswith("/amazon/") else path

    @staticmethod
    def _covers(resource: dict[str, Any], method: str, path: str) -> bool:
        pattern = re.sub(r"\{[^}]+\}", "*", str(resource.get("path", "")))
        return str(resource.get("method", "")).upper() == method.upper() and fnmatch.fnmatchcase(path, pattern)

    def _is_rdt(self, request: Request) -> bool:
        return request.headers.get("x-amz-access-token", "") in self.state.rdts

    def _create_rdt(self, body: dict[str, Any]) -> dict[str, Any]:
        resources = body.get("restrictedResources")
        if not isinstance(resources, list) or not resources:
            raise SpApiError(400, "InvalidInput", "restrictedResources is required.")
        if len(resources) > 50:
            raise SpApiError(400, "InvalidInput", "At most 50 restricted resources per token.")
        for r in resources:
            if not isinstance(r, dict) or r.get("method") not in {"GET", "PUT", "POST", "DELETE"}:
                raise SpApiError(400, "InvalidInput", "Each restricted resource needs a method.")
            path = str(r.get("path", ""))
            if not path.startswith(("/orders/v0/orders", "/orders/2026-01-01/orders")):
                raise SpApiError(400, "InvalidInput", f"{path!r} is not a restricted resource.")
        token = f"Atz.sprdt|sandbox-{self.ctx.ids.getrandbits(96):024x}"
        self.state.rdts[token] = (self.ctx.clock.now() + timedelta(seconds=3600), copy.deepcopy(resources))
        return {"restrictedDataToken": token, "expiresIn": 3600}

    # -- Rate limits ----------------------------------------------------------------------------

    @property
    def _rate_scale(self) -> float:
        return self.state.rate_scale or self.ctx.config.amazon_rate_scale

    def _take(self, operation: str) -> str:
        """Spend a token from the operation's bucket; its rate is the value of x-amzn-RateLimit-Limit."""
        base_rate, base_burst = RATE_LIMITS[operation]
        rate = base_rate * self._rate_scale
        burst = max(1, round(base_burst * self._rate_scale))
        now = self.ctx.clock.timestamp()
        bucket = self.state.buckets.setdefault(operation, _Bucket(float(burst), now))
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            self.state.throttled[operation] = self.state.throttled.get(operation, 0) + 1
            raise SpApiError(429, "QuotaExceeded", "You exceeded your quota for the requested resource.")
        bucket.tokens -= 1.0
        return f"{rate:g}"

    # -- Orders ---------------------------------------------------------------------------------

    def _plentiful_catalogue(self) -> list[seed.CatalogItem]:
        return [item for item in seed.CATALOG if sum(item.stock.values()) >= 20]

    def _new_order_id(self) -> str:
        n = self.ctx.ids.randrange(10**14)
        return f"{111 + self._next() % 800:03d}-{n // 10**7:07d}-{n % 10**7:07d}"

    def _create_order(self, channel: str, lines: list[tuple[str, int]], *, marketplace_id: str | None = None) -> _Order:
        now = self.ctx.clock.now()
        dice = self.ctx.random
        buyer = dice.choice(_BUYERS)
        street, city, state, postal = dice.choice(_ADDRESSES)
        items = [
            _Item(
                order_item_id=f"{self.ctx.ids.randrange(10**13, 10**14)}",
                sku=sku,
                title=seed.CATALOG_BY_SKU[sku].name,
                quantity=qty,
                unit_price=seed.CATALOG_BY_SKU[sku].price,
            )
            for sku, qty in lines
        ]
        order = _Order(
            order_id=self._new_order_id(),
            marketplace_id=marketplace_id or self.ctx.config.amazon_marketplace_id,
            fulfilled_by="AMAZON" if channel == "AFN" else "MERCHANT",
            created=now,
            updated=now,
            status="UNSHIPPED",
            items=items,
            buyer_name=buyer,
            buyer_email=f"{self.ctx.ids.getrandbits(40):010x}@marketplace.amazon.com",
            street=street,
            city=city,
            state=state,
            postal_code=postal,
            phone=f"+1 555 01{self.ctx.ids.randrange(100):02d}",
        )
        self.state.orders[order.order_id] = order
        return order

    def _request_buyer_cancel(self, order: _Order, reason: str) -> None:
        for item in order.items:
            item.cancel_requested = True
            item.cancel_reason = reason
        order.cancel_request_due = None
        order.updated = self.ctx.clock.now()

    def _order(self, order_id: str) -> _Order:
        order = self.state.orders.get(order_id)
        if order is None:
            raise SpApiError(404, "NotFound", f"Order {order_id} was not found.")
        return order

    def _search_orders(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        token = q.get("paginationToken")
        try:
            size = int(q.get("maxResultsPerPage", "100"))
        except ValueError:
            raise SpApiError(400, "InvalidInput", "maxResultsPerPage must be an integer.") from None
        if not 1 <= size <= 100:
            raise SpApiError(400, "InvalidInput", "maxResultsPerPage must be between 1 and 100.")
        pii = self._pii_allowed(request)
        if token:
            # Reusable, like Amazon's (24 h there): a retried page must get the same page again.
            cursor = self.state.page_cursors.get(token)
            if cursor is None:
                raise SpApiError(400, "InvalidInput", "The paginationToken is invalid or has expired.")
            ids, offset, before = cursor
        else:
            ids, before = self._matching(request)
            offset = 0
        page = ids[offset : offset + size]
        body: dict[str, Any] = {
            "orders": [self._order_json(self.state.orders[i], pii=pii) for i in page],
            "lastUpdatedBefore": before,
        }
        if offset + size < len(ids):
            next_token = base64.urlsafe_b64encode(f"{self._next()}:{self.ctx.ids.getrandbits(64):x}".encode()).decode()
            self.state.page_cursors[next_token] = (ids, offset + size, before)
            body["pagination"] = {"nextToken": next_token}
        return body

    def _matching(self, request: Request) -> tuple[list[str], str]:
        q = request.query_params
        created_after, updated_after = q.get("createdAfter"), q.get("lastUpdatedAfter")
        if bool(created_after) == bool(updated_after):
            raise SpApiError(400, "InvalidInput", "Provide exactly one of createdAfter and lastUpdatedAfter.")
        if created_after and (q.get("lastUpdatedBefore")):
            raise SpApiError(400, "InvalidInput", "createdAfter cannot be combined with lastUpdatedBefore.")
        if updated_after and q.get("createdBefore"):
            raise SpApiError(400, "InvalidInput", "lastUpdatedAfter cannot be combined with createdBefore.")
        by_created = bool(created_after)
        after = _parse_time(created_after or updated_after or "", "createdAfter" if by_created else "lastUpdatedAfter")
        before_raw = q.get("createdBefore") if by_created else q.get("lastUpdatedBefore")
        now = self.ctx.clock.now()
        before = _parse_time(before_raw, "before") if before_raw else now
        if before < after:
            raise SpApiError(400, "InvalidInput", "The end of the window is before its start.")
        marketplaces = set(_list_param(request, "marketplaceIds"))
        statuses = set(_list_param(request, "fulfillmentStatuses"))
        fulfilled_by = set(_list_param(request, "fulfilledBy"))
        matched = []
        for order in self.state.orders.values():
            when = order.created if by_created else order.updated
            if not after <= when <= before:
                continue
            if marketplaces and order.marketplace_id not in marketplaces:
                continue
            if statuses and order.status not in statuses:
                continue
            if fulfilled_by and order.fulfilled_by not in fulfilled_by:
                continue
            matched.append(order)
        matched.sort(key=lambda o: ((o.created if by_created else o.updated), o.order_id))
        return [o.order_id for o in matched], _ts(before)

    def _get_order(self, request: Request, order_id: str) -> dict[str, Any]:
        return {"order": self._order_json(self._order(order_id), pii=self._pii_allowed(request))}

    def _pii_allowed(self, request: Request) -> bool:
        # Orders 2026-01-01 gives PII to the role; the sandbox also honours an RDT for the path.
        return self._is_rdt(request) or self.ctx.config.amazon_pii_role

    def _order_json(self, order: _Order, *, pii: bool) -> dict[str, Any]:
        """The 2026-01-01 Order, every dataset included; names, streets and phones only with `pii`."""
        address: dict[str, Any] = {
            "city": order.city,
            "stateOrRegion": order.state,
            "postalCode": order.postal_code,
            "countryCode": "US",
        }
        buyer: dict[str, Any] = {}
        if pii and order.mfn:
            address = {
                "name": order.buyer_name,
                "addressLine1": order.street,
                **address,
                "phone": order.phone,
                "addressType": "RESIDENTIAL",
            }
            buyer = {"buyerName": order.buyer_name, "buyerEmail": order.buyer_email}
        item_total = sum((i.line_price for i in order.items), Decimal(0))
        tax_total = sum((i.tax for i in order.items), Decimal(0))
        items = []
        for item in order.items:
            row: dict[str, Any] = {
                "orderItemId": item.order_item_id,
                "quantityOrdered": item.quantity,
                "product": {
                    "asin": f"B0SBX{seed.CATALOG_BY_SKU[item.sku].erp_item_id}",
                    "title": item.title,
                    "sellerSku": item.sku,
                    "condition": {"conditionType": "NEW", "conditionSubtype": "NEW"},
                    "price": {"unitPrice": _money(item.unit_price)},
                },
                "proceeds": {
                    "proceedsTotal": _money(item.line_price + item.tax),
                    "breakdowns": [
                        {"type": "ITEM", "subtotal": _money(item.line_price)},
                        {"type": "TAX", "subtotal": _money(item.tax)},
                        {"type": "SHIPPING", "subtotal": _money(Decimal(0))},
                    ],
                },
                "fulfillment": {
                    "quantityFulfilled": item.shipped,
                    "quantityUnfulfilled": 0 if item.cancelled else item.quantity - item.shipped,
                },
            }
            cancellation: dict[str, Any] = {}
            if item.cancel_requested:
                cancellation["cancellationRequest"] = {"requester": "BUYER", "cancelReason": item.cancel_reason or ""}
            if item.cancelled:
                cancellation["cancellationExecution"] = {
                    "cancelledBy": order.cancelled_by or "MERCHANT",
                    "cancelReason": item.cancel_reason or "",
                }
            if cancellation:
                row["cancellation"] = cancellation
            items.append(row)
        body: dict[str, Any] = {
            "orderId": order.order_id,
            "createdTime": _ts(order.created),
            "lastUpdatedTime": _ts(order.updated),
            "programs": [],
            "salesChannel": {
                "channelName": "AMAZON",
                "marketplaceId": order.marketplace_id,
                "marketplaceName": "Amazon.com",
            },
            "buyer": buyer,
            "recipient": {"deliveryAddress": address},
            "proceeds": {
                "grandTotal": _money(item_total + tax_total),
                "breakdowns": [
                    {"type": "ITEM", "subtotal": _money(item_total)},
                    {"type": "TAX", "subtotal": _money(tax_total)},
                    {"type": "SHIPPING", "subtotal": _money(Decimal(0))},
                ],
            },
            "fulfillment": {
                "fulfillmentStatus": order.status,
                "fulfilledBy": order.fulfilled_by,
                "fulfillmentServiceLevel": "STANDARD",
                "shipByWindow": {
                    "earliestDateTime": _ts(order.created),
                    "latestDateTime": _ts(order.created + timedelta(days=2)),
                },
            },
            "orderItems": items,
        }
        if order.mfn:
            body["packages"] = [
                {
                    "packageReferenceId": ref,
                    "createdTime": pkg["createdTime"],
                    "carrier": pkg["carrierCode"],
                    "shipTime": pkg["shipDate"],
                    "trackingNumber": pkg["trackingNumber"],
                    "packageStatus": {"status": "IN_TRANSIT"},
                    "packageItems": [
                        {"orderItemId": i["orderItemId"], "quantity": i["quantity"]} for i in pkg["orderItems"]
                    ],
                }
                for ref, pkg in order.packages.items()
            ]
        return body

    def _order_summary(self, order: _Order) -> dict[str, Any]:
        return {
            "orderId": order.order_id,
            "fulfillmentChannel": "MFN" if order.mfn else "AFN",
            "status": order.status,
            "marketplaceId": order.marketplace_id,
            "createdTime": _ts(order.created),
            "lastUpdatedTime": _ts(order.updated),
            "acknowledged": order.acknowledged,
            "cancelledBy": order.cancelled_by,
            "buyerCancellationRequested": any(i.cancel_requested for i in order.items),
            "items": [
                {
                    "orderItemId": i.order_item_id,
                    "sku": i.sku,
                    "quantityOrdered": i.quantity,
                    "quantityShipped": i.shipped,
                    "unitPrice": str(i.unit_price),
                    "itemTax": str(i.tax),
                    "cancelRequested": i.cancel_requested,
                    "cancelled": i.cancelled,
                    "refunded": str(i.refunded),
                }
                for i in order.items
            ],
            "shipments": copy.deepcopy(list(order.packages.values())),
            "refunds": copy.deepcopy(order.refunds),
        }

    # -- confirmShipment (v0) -------------------------------------------------------------------

    def _confirm_shipment(self, order_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        order = self._order(order_id)
        if body.get("marketplaceId") != order.marketplace_id:
            raise SpApiError(400, "InvalidInput", "marketplaceId is missing or does not match the order.")
        detail = body.get("packageDetail")
        if not isinstance(detail, dict):
            raise SpApiError(400, "InvalidInput", "packageDetail is required.")
        for name in ("packageReferenceId", "carrierCode", "trackingNumber", "shipDate", "orderItems"):
            if not detail.get(name):
                raise SpApiError(400, "InvalidInput", f"packageDetail.{name} is required.")
        ref = str(detail["packageReferenceId"])
        if not ref.isdigit() or int(ref) <= 0:
            raise SpApiError(400, "InvalidInput", "packageReferenceId must be a positive number.")
        if detail["carrierCode"] == "Other" and not detail.get("carrierName"):
            raise SpApiError(400, "InvalidInput", "carrierName is required when carrierCode is Other.")
        _parse_time(str(detail["shipDate"]), "packageDetail.shipDate")
        if not order.mfn:
            raise SpApiError(400, "InvalidInput", f"Order {order_id} is fulfilled by Amazon; it cannot be confirmed.")
        if order.status == "CANCELLED":
            raise SpApiError(400, "InvalidInput", f"Order {order_id} is cancelled.")
        # A repeat of the same packageReferenceId edits that package: its quantities are not counted twice.
        previous = order.packages.get(ref)
        already = {i.order_item_id: i.shipped for i in order.items}
        if previous is not None:
            for line in previous["orderItems"]:
                already[line["orderItemId"]] -= line["quantity"]
        items = {i.order_item_id: i for i in order.items}
        wanted: dict[str, int] = {}
        for line in detail["orderItems"]:
            if not isinstance(line, dict):
                raise SpApiError(400, "InvalidInput", "orderItems entries must be objects.")
            item_id, qty = str(line.get("orderItemId", "")), line.get("quantity")
            if item_id not in items:
                raise SpApiError(400, "InvalidInput", f"orderItemId {item_id} is not part of order {order_id}.")
            if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
                raise SpApiError(400, "InvalidInput", f"quantity for {item_id} must be a positive integer.")
            wanted[item_id] = wanted.get(item_id, 0) + qty
        for item_id, qty in wanted.items():
            item = items[item_id]
            if item.cancelled:
                raise SpApiError(400, "InvalidInput", f"orderItemId {item_id} is cancelled.")
            if already[item_id] + qty > item.quantity:
                raise SpApiError(
                    400,
                    "InvalidInput",
                    f"quantity {qty} for {item_id} is more than the {item.quantity - already[item_id]} unshipped.",
                )
        for item_id, shipped in already.items():
            items[item_id].shipped = shipped + wanted.get(item_id, 0)
        order.packages[ref] = {
            "packageReferenceId": ref,
            "carrierCode": detail["carrierCode"],
            "carrierName": detail.get("carrierName"),
            "shippingMethod": detail.get("shippingMethod"),
            "trackingNumber": detail["trackingNumber"],
            "shipDate": detail["shipDate"],
            "createdTime": previous["createdTime"] if previous else _ts(self.ctx.clock.now()),
            "orderItems": [{"orderItemId": k, "quantity": v} for k, v in wanted.items()],
        }
        live = [i for i in order.items if not i.cancelled]
        if all(i.shipped >= i.quantity for i in live):
            order.status = "SHIPPED"
        elif any(i.shipped for i in live):
            order.status = "PARTIALLY_SHIPPED"
        order.updated = self.ctx.clock.now()
        return 204, None

    # -- Feeds ----------------------------------------------------------------------------------

    @staticmethod
    def _document_url(request: Request, document_id: str) -> str:
        return f"{str(request.base_url).rstrip('/')}/amazon/_documents/{document_id}"

    def _create_document(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        content_type = body.get("contentType")
        if not isinstance(content_type, str) or not content_type:
            raise SpApiError(400, "InvalidInput", "contentType is required.")
        doc_id = f"amzn1.tortuga.4.na.sandbox{self._next():08d}"
        self.state.documents[doc_id] = {"contentType": content_type, "content": None}
        return {"feedDocumentId": doc_id, "url": self._document_url(request, doc_id)}

    def _document_json(self, request: Request, document_id: str) -> dict[str, Any]:
        if document_id not in self.state.documents:
            raise SpApiError(404, "NotFound", f"Feed document {document_id} was not found.")
        return {"feedDocumentId": document_id, "url": self._document_url(request, document_id)}

    def _create_feed(self, body: dict[str, Any]) -> dict[str, Any]:
        feed_type = body.get("feedType")
        if feed_type not in {"POST_ORDER_ACKNOWLEDGEMENT_DATA", "POST_PAYMENT_ADJUSTMENT_DATA"}:
            raise SpApiError(400, "InvalidInput", f"feedType {feed_type!r} is not supported by the sandbox.")
        marketplaces = body.get("marketplaceIds")
        if not isinstance(marketplaces, list) or not marketplaces:
            raise SpApiError(400, "InvalidInput", "marketplaceIds is required.")
        doc = self.state.documents.get(str(body.get("inputFeedDocumentId", "")))
        if doc is None:
            raise SpApiError(400, "InvalidInput", "inputFeedDocumentId does not name a feed document.")
        if doc.get("content") is None:
            raise SpApiError(400, "InvalidInput", "The feed document has not been uploaded.")
        feed_id = f"{50000000000 + self._next()}"
        self.state.feeds[feed_id] = _Feed(
            feed_id=feed_id,
            feed_type=feed_type,
            marketplace_ids=[str(m) for m in marketplaces],
            document_id=str(body["inputFeedDocumentId"]),
            created=self.ctx.clock.now(),
        )
        return {"feedId": feed_id}

    def _feed_json(self, feed_id: str) -> dict[str, Any]:
        feed = self.state.feeds.get(feed_id)
        if feed is None:
            raise SpApiError(404, "NotFound", f"Feed {feed_id} was not found.")
        body: dict[str, Any] = {
            "feedId": feed.feed_id,
            "feedType": feed.feed_type,
            "marketplaceIds": feed.marketplace_ids,
            "createdTime": _ts(feed.created),
            "processingStatus": feed.status,
        }
        if feed.started:
            body["processingStartTime"] = _ts(feed.started)
        if feed.ended:
            body["processingEndTime"] = _ts(feed.ended)
        if feed.result_document_id:
            body["resultFeedDocumentId"] = feed.result_document_id
        return body

    def _advance(self, now: datetime) -> None:
        """Time-driven changes: buyer cancellation requests fall due, feeds move on and take effect."""
        for order in self.state.orders.values():
            if order.cancel_request_due is not None and order.cancel_request_due <= now:
                if order.status in {"PENDING", "UNSHIPPED"}:
                    self._request_buyer_cancel(order, order.cancel_request_reason)
                order.cancel_request_due = None
        cfg = self.ctx.config
        for feed in self.state.feeds.values():
            if feed.status == "IN_QUEUE" and now >= feed.created + timedelta(seconds=cfg.amazon_feed_queue_seconds):
                feed.status = "IN_PROGRESS"
                # Stamped when it was due, not when noticed, so one clock jump can finish a feed.
                feed.started = feed.created + timedelta(seconds=cfg.amazon_feed_queue_seconds)
            due = feed.started is not None and now >= feed.started + timedelta(
                seconds=cfg.amazon_feed_processing_seconds
            )
            if feed.status == "IN_PROGRESS" and due and feed.started is not None:
                self._process_feed(feed, feed.started + timedelta(seconds=cfg.amazon_feed_processing_seconds))

    def _process_feed(self, feed: _Feed, ended: datetime) -> None:
        content = self.state.documents[feed.document_id].get("content") or b""
        results: list[tuple[str, str, str]] = []  # (message id, order id, error or "")
        try:
            # Entity declarations are refused outright, so entity expansion attacks cannot apply.
            if b"<!DOCTYPE" in content or b"<!ENTITY" in content:
                raise ET.ParseError("DOCTYPE and ENTITY declarations are not allowed")
            root = ET.fromstring(content)  # noqa: S314 - declarations refused above
            for element in root.iter():
                # A default namespace on the envelope must not hide its elements from find().
                element.tag = element.tag.rpartition("}")[2]
        except ET.ParseError as exc:
            root = None
            results.append(("0", "", f"The feed is not well-formed XML: {exc}"))
        messages = root.findall("Message") if root is not None else []
        for msg in messages:
            msg_id = msg.findtext("MessageID") or "0"
            if feed.feed_type == "POST_ORDER_ACKNOWLEDGEMENT_DATA":
                node = msg.find("OrderAcknowledgement")
                outcome = (
                    self._apply_acknowledgement(node, feed) if node is not None else ("", "No OrderAcknowledgement.")
                )
            else:
                node = msg.find("OrderAdjustment")
                outcome = self._apply_adjustment(node, feed) if node is not None else ("", "No OrderAdjustment.")
            results.append((msg_id, *outcome))
        feed.errors = [f"message {m} ({o}): {e}" for m, o, e in results if e]
        doc_id = f"amzn1.tortuga.4.na.sandbox{self._next():08d}"
        self.state.documents[doc_id] = {
            "contentType": "text/xml; charset=UTF-8",
            "content": self._report(feed, results),
        }
        feed.result_document_id = doc_id
        feed.status = "DONE"
        feed.ended = ended

    def _report(self, feed: _Feed, results: list[tuple[str, str, str]]) -> bytes:
        """The processing report Amazon writes for an XML feed."""
        errors = [r for r in results if r[2]]
        env = ET.Element("AmazonEnvelope")
        header = ET.SubElement(env, "Header")
        ET.SubElement(header, "DocumentVersion").text = "1.02"
        ET.SubElement(header, "MerchantIdentifier").text = self.ctx.config.amazon_seller_id
        ET.SubElement(env, "MessageType").text = "ProcessingReport"
        msg = ET.SubElement(env, "Message")
        ET.SubElement(msg, "MessageID").text = "1"
        report = ET.SubElement(msg, "ProcessingReport")
        ET.SubElement(report, "DocumentTransactionID").text = feed.feed_id
        ET.SubElement(report, "StatusCode").text = "Complete"
        summary = ET.SubElement(report, "ProcessingSummary")
        ET.SubElement(summary, "MessagesProcessed").text = str(len(results))
        ET.SubElement(summary, "MessagesSuccessful").text = str(len(results) - len(errors))
        ET.SubElement(summary, "MessagesWithError").text = str(len(errors))
        ET.SubElement(summary, "MessagesWithWarning").text = "0"
        for msg_id, order_id, error in errors:
            result = ET.SubElement(report, "Result")
            ET.SubElement(result, "MessageID").text = msg_id
            ET.SubElement(result, "ResultCode").text = "Error"
            ET.SubElement(result, "ResultMessageCode").text = "18028"
            ET.SubElement(result, "ResultDescription").text = error
            info = ET.SubElement(result, "AdditionalInfo")
            ET.SubElement(info, "AmazonOrderID").text = order_id
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(env)

    def _feed_order(self, node: ET.Element) -> tuple[_Order | None, str, str]:
        order_id = (node.findtext("AmazonOrderID") or "").strip()
        order = self.state.orders.get(order_id)
        if order is None:
            return None, order_id, f"Order {order_id} was not found."
        if not order.mfn:
            return None, order_id, f"Order {order_id} is fulfilled by Amazon."
        return order, order_id, ""

    def _apply_acknowledgement(self, node: ET.Element, feed: _Feed) -> tuple[str, str]:
        """StatusCode Success acknowledges the order; Failure cancels it (all items, or those listed)."""
        order, order_id, error = self._feed_order(node)
        if order is None:
            return order_id, error
        code = (node.findtext("StatusCode") or "").strip()
        if code == "Success":
            order.acknowledged = True
            order.updated = self.ctx.clock.now()
            feed.effects.append(f"acknowledged {order_id}")
            return order_id, ""
        if code != "Failure":
            return order_id, f"StatusCode {code!r} is neither Success nor Failure."
        if order.status == "CANCELLED":
            feed.effects.append(f"{order_id} already cancelled")
            return order_id, ""
        if any(i.shipped for i in order.items):
            return order_id, f"Order {order_id} has shipped items and cannot be cancelled."
        listed = {(it.findtext("AmazonOrderItemCode") or "").strip(): it for it in node.findall("Item")}
        targets = [i for i in order.items if not listed or i.order_item_id in listed]
        unknown = set(listed) - {i.order_item_id for i in order.items}
        if unknown:
            return order_id, f"Order item {sorted(unknown)[0]} is not part of order {order_id}."
        for item in targets:
            item.cancelled = True
            reason = (listed[item.order_item_id].findtext("CancelReason") or "") if listed else ""
            item.cancel_reason = item.cancel_reason or reason or None
        buyer = any(i.cancel_requested for i in targets)
        if all(i.cancelled for i in order.items):
            order.status = "CANCELLED"
            order.cancelled_by = "MERCHANT"
        order.updated = self.ctx.clock.now()
        feed.effects.append(
            f"cancelled {order_id}"
            + (" (buyer request acknowledged)" if buyer else "")
            + ("" if order.status == "CANCELLED" else f" items {[i.order_item_id for i in targets]}")
        )
        return order_id, ""

    def _apply_adjustment(self, node: ET.Element, feed: _Feed) -> tuple[str, str]:
        """A Refund adjustment per item; Principal + Tax + Shipping may not exceed what is left to refund."""
        order, order_id, error = self._feed_order(node)
        if order is None:
            return order_id, error
        if (node.findtext("ActionType") or "").strip() not in {"Refund", "Cancel"}:
            return order_id, "ActionType must be Refund or Cancel."
        items = {i.order_item_id: i for i in order.items}
        planned: list[tuple[_Item, Decimal, str]] = []
        for adjusted in node.findall("AdjustedItem"):
            item_id = (adjusted.findtext("AmazonOrderItemCode") or "").strip()
            item = items.get(item_id)
            if item is None:
                return order_id, f"Order item {item_id} is not part of order {order_id}."
            total = Decimal(0)
            for comp in adjusted.iter("Component"):
                try:
                    total += abs(Decimal((comp.findtext("Amount") or "0").strip()))
                except InvalidOperation:
                    return order_id, f"Adjustment amount for {item_id} is not a number."
            reason = (adjusted.findtext("AdjustmentReason") or "").strip()
            if not reason:
                return order_id, f"AdjustmentReason is required for {item_id}."
            if item.refunded + total > item.line_price + item.tax:
                return order_id, f"Refund of {total} for {item_id} exceeds the amount left to refund."
            planned.append((item, total, reason))
        if not planned:
            return order_id, "An adjustment needs at least one AdjustedItem."
        for item, total, reason in planned:
            item.refunded += total
            order.refunds.append(
                {"feedId": feed.feed_id, "orderItemId": item.order_item_id, "amount": str(total), "reason": reason}
            )
        order.updated = self.ctx.clock.now()
        amount = sum((t for _i, t, _r in planned), Decimal(0))
        feed.effects.append(f"refunded {amount} on {order_id}")
        return order_id, ""

    # -- Listings -------------------------------------------------------------------------------

    def _patch_listing(self, request: Request, seller_id: str, sku: str, body: dict[str, Any]) -> tuple[int, Any]:
        if seller_id != self.ctx.config.amazon_seller_id:
            raise SpApiError(403, "Unauthorized", "Access to requested resource is denied.", "Unknown sellerId.")
        if not _list_param(request, "marketplaceIds"):
            raise SpApiError(400, "InvalidInput", "marketplaceIds is required.")
        submission = f"{self.ctx.ids.getrandbits(128):032x}"
        issues: list[dict[str, Any]] = []
        quantity: int | None = None
        if sku not in self.state.listings:
            issues.append(self._issue("4000001", f"SKU {sku} has no listing for this seller.", []))
        if not body.get("productType"):
            issues.append(self._issue("90220", "productType is required.", ["productType"]))
        patches = body.get("patches")
        if not isinstance(patches, list) or not patches:
            issues.append(self._issue("90220", "patches is required.", []))
            patches = []
        for patch in patches:
            if not isinstance(patch, dict) or patch.get("op") not in {"add", "replace", "merge", "delete"}:
                issues.append(self._issue("90244", "op must be add, replace, merge or delete.", []))
                continue
            if patch.get("path") != "/attributes/fulfillment_availability":
                continue
            values = patch.get("value")
            default = [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []
            default = [v for v in default if v.get("fulfillment_channel_code") == "DEFAULT"]
            qty = default[0].get("quantity") if default else None
            if patch["op"] == "delete" or not isinstance(qty, int) or isinstance(qty, bool) or qty < 0:
                issues.append(
                    self._issue("90244", "fulfillment_availability needs DEFAULT with a quantity >= 0.",
                                ["fulfillment_availability"])
                )  # fmt: skip
                continue
            quantity = qty
        status = "INVALID" if issues else "ACCEPTED"
        if request.query_params.get("mode") == "VALIDATION_PREVIEW":
            status = "INVALID" if issues else "VALID"
        elif not issues and quantity is not None:
            self.state.listings[sku] = quantity
        self.state.listing_submissions.append({"sku": sku, "status": status, "quantity": quantity})
        return 200, {"sku": sku, "status": status, "submissionId": submission, "issues": issues}

    @staticmethod
    def _issue(code: str, message: str, attributes: list[str]) -> dict[str, Any]:
        return {"code": code, "message": message, "severity": "ERROR", "attributeNames": attributes}

    # -- Sandbox-only routes --------------------------------------------------------------------

    def _sandbox_create_order(self, body: dict[str, Any]) -> tuple[int, Any]:
        channel = body.get("fulfillment_channel", "MFN")
        if channel not in {"MFN", "AFN"}:
            raise SpApiError(400, "InvalidInput", "fulfillment_channel must be MFN or AFN.")
        raw_lines = body.get("lines") or [{"sku": self._plentiful_catalogue()[0].sku, "quantity": 1}]
        lines: list[tuple[str, int]] = []
        for line in raw_lines:
            sku, qty = line.get("sku"), line.get("quantity", 1)
            if sku not in seed.CATALOG_BY_SKU:
                raise SpApiError(400, "InvalidInput", f"{sku!r} is not in the seed catalogue.")
            if not isinstance(qty, int) or qty <= 0:
                raise SpApiError(400, "InvalidInput", "quantity must be a positive integer.")
            lines.append((sku, qty))
        order = self._create_order(channel, lines, marketplace_id=body.get("marketplace_id"))
        if body.get("buyer_cancel_reason"):
            self._request_buyer_cancel(order, str(body["buyer_cancel_reason"]))
        return 201, self._order_summary(order)

    def _sandbox_buyer_cancel(self, order_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        order = self._order(order_id)
        if order.status not in {"PENDING", "UNSHIPPED"}:
            raise SpApiError(400, "InvalidInput", f"Order {order_id} is {order.status}; buyers cannot cancel it.")
        self._request_buyer_cancel(order, str(body.get("reason") or "Buyer requested cancellation"))
        return 200, self._order_summary(order)

    def _sandbox_rate_scale(self, body: dict[str, Any]) -> tuple[int, Any]:
        scale = body.get("scale")
        if not isinstance(scale, int | float) or isinstance(scale, bool) or scale <= 0:
            raise SpApiError(400, "InvalidInput", "scale must be a positive number.")
        self.state.rate_scale = float(scale)
        # Buckets restart full at the new size, as a new usage plan would.
        self.state.buckets.clear()
        return 200, {"scale": self._rate_scale}

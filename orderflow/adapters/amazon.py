"""The Amazon channel adapter: Selling Partner API (SP-API) spoken in orderflow's canonical models.

- Authentication: Login with Amazon (LWA) exchanges the refresh token for a one-hour access
  token, sent as `x-amz-access-token`. The token is cached and refreshed a minute before it
  expires, under a lock so concurrent calls refresh it once. No SigV4 (not required since 2023).
- Rate limits: SP-API throttles each operation with its own token bucket. The adapter keeps one
  bucket per operation, starting from Amazon's documented rate and burst and following the rate
  in `x-amzn-RateLimit-Limit` as answers arrive. A wait up to `max_throttle_wait_seconds` is taken
  inside the call; a longer one (or a 429 `QuotaExceeded` that persists) is `RateLimitedError`
  with the wait, which Temporal uses as the retry delay.
- Orders are read through Orders API 2026-01-01 (`searchOrders`, `getOrder`). With the PII role
  the recipient's name and street come with the access token (`includedData=RECIPIENT`). Without
  it they are withheld, and the order is read again with a Restricted Data Token for that one
  order (`createRestrictedDataToken`, as v0 requires for every PII read).
- Only merchant-fulfilled (MFN) orders are mapped; an Amazon-fulfilled (AFN/FBA) order is refused
  with a `ValidationRejectedError` naming the reason.
- Shipments: v0 `confirmShipment`, one package per canonical shipment, partial shipments allowed.
  The package reference is derived from the shipment id, so a repeat edits the same package.
- Cancel and refund go through the Feeds API (XML `POST_ORDER_ACKNOWLEDGEMENT_DATA`,
  `POST_PAYMENT_ADJUSTMENT_DATA`). Feeds have no idempotency key: see `FeedLedger` and `AmazonClient.find_feed`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal, Protocol
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import httpx
from pydantic import BaseModel, ConfigDict

from orderflow.adapters.errors import (
    AdapterError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    TransientError,
    ValidationRejectedError,
    classify_status,
    retry_after_seconds,
    transport_error,
)
from orderflow.canonical import Address, Shipment
from orderflow.canonical.money import Money, total
from orderflow.canonical.order import (
    Channel,
    Discount,
    FinancialStatus,
    Order,
    OrderLine,
    ShippingCharge,
    TaxLine,
)
from orderflow.canonical.party import Customer
from orderflow.canonical.returns import ChannelRefundRef, Refund
from orderflow.settings import AmazonSettings

SYSTEM = "amazon"

ORDERS_PATH = "/orders/2026-01-01/orders"
FEEDS_PATH = "/feeds/2021-06-30"

# Amazon's documented default usage plans (rate in requests per second, burst). The header
# `x-amzn-RateLimit-Limit` may raise or lower the rate for this seller and application.
USAGE_PLANS: dict[str, tuple[float, int]] = {
    "searchOrders": (0.0056, 20),
    "getOrder": (0.5, 30),
    "getOrderAddress": (0.5, 30),
    "confirmShipment": (2.0, 10),
    "createRestrictedDataToken": (1.0, 10),
    "createFeedDocument": (0.5, 15),
    "createFeed": (0.0083, 15),
    "getFeed": (2.0, 15),
    "getFeedDocument": (0.0222, 10),
    "patchListingsItem": (5.0, 5),
}
RATE_LIMIT_HEADER = "x-amzn-RateLimit-Limit"
# How many throttles one call sits out before handing the wait to Temporal.
MAX_THROTTLE_WAITS = 3
# Refresh the LWA token this long before Amazon says it expires: clocks drift, calls take time.
TOKEN_REFRESH_MARGIN_SECONDS = 60.0

ORDER_DATASETS = ("BUYER", "RECIPIENT", "PROCEEDS", "PROMOTION", "CANCELLATION", "FULFILLMENT", "PACKAGES")
SEARCH_DATASETS = ("CANCELLATION", "FULFILLMENT")
AFN_REASON = "AFN order, fulfilled by Amazon"

ACKNOWLEDGEMENT_FEED = "POST_ORDER_ACKNOWLEDGEMENT_DATA"
ADJUSTMENT_FEED = "POST_PAYMENT_ADJUSTMENT_DATA"
FEED_CONTENT_TYPE = "text/xml; charset=UTF-8"
# How often a refund polls its feed while it may wait inside the call (getFeed allows 2 rps).
FEED_POLL_SECONDS = 0.5
# How long a write to the feed ledger may take (SQLite's busy timeout is 15 s under write storms).
LEDGER_WRITE_SECONDS = 15.0
FEED_FINAL_STATUSES = frozenset({"DONE", "CANCELLED", "FATAL"})

# Amazon's carrier codes for confirmShipment; anything else is sent as `Other` with its name.
CARRIER_CODES = {
    "ups": "UPS",
    "usps": "USPS",
    "fedex": "FedEx",
    "dhl": "DHL",
    "ontrac": "OnTrac",
    "lasership": "LaserShip",
}

# Orderflow's cancel reasons as the acknowledgement feed's CancelReason codes.
CANCEL_REASONS = (
    ("buyer", "BuyerCanceled"),
    ("customer", "BuyerCanceled"),
    ("stock", "NoInventory"),
    ("inventory", "NoInventory"),
    ("backorder", "NoInventory"),
    ("address", "ShippingAddressUndeliverable"),
)


# ---------------------------------------------------------------------- models (not canonical)


class AmazonModel(BaseModel):
    """An Amazon-side value the poller needs; never passed into workflows."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AmazonOrderSummary(AmazonModel):
    """One order from `searchOrders`: enough to decide whether to start, cancel or skip a saga."""

    amazon_order_id: str
    status: str
    fulfillment_channel: Literal["MFN", "AFN"]
    last_updated: datetime
    cancellation_requested: bool = False
    marketplace_id: str | None = None


class OrderPage(AmazonModel):
    """One page of a search; `next_token` fetches the next one."""

    orders: list[AmazonOrderSummary]
    next_token: str | None = None


class FeedStatus(AmazonModel):
    """A feed's processing status and, once done, its processing report's summary."""

    feed_id: str
    feed_type: str
    processing_status: str
    result_document_id: str | None = None
    messages_processed: int | None = None
    messages_successful: int | None = None
    messages_with_error: int = 0
    errors: list[str] = []

    @property
    def done(self) -> bool:
        """Amazon has finished with the feed (successfully or not)."""
        return self.processing_status in FEED_FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        """Every message in the feed was applied."""
        return self.processing_status == "DONE" and self.messages_with_error == 0 and not self.errors


# ---------------------------------------------------------------------- rate limiting


class TokenBucket:
    """One SP-API operation's usage plan: `rate` tokens a second refill a bucket of `burst`."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    @property
    def tokens(self) -> float:
        """Requests that may be sent now without waiting."""
        self._refill()
        return self._tokens

    def wait_time(self) -> float:
        """Seconds until one request may be sent."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self) -> float:
        """Claim a request slot; returns how long the caller must wait before sending it."""
        wait = self.wait_time()
        self._tokens -= 1  # may go negative: later callers queue behind this one
        return wait

    def set_rate(self, rate: float) -> None:
        """Follow the rate Amazon reports for this operation (`x-amzn-RateLimit-Limit`)."""
        if rate > 0:
            self._refill()
            self.rate = rate

    def empty_for(self, seconds: float) -> None:
        """Amazon said to come back in `seconds`: the next token is due then."""
        self._refill()
        self._tokens = min(self._tokens, 1 - seconds * self.rate)

    def drain(self) -> None:
        """Amazon said the bucket is empty (a 429): start refilling from nothing."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)


class RateLimiter:
    """The token buckets of every operation, created on first use from Amazon's usage plans."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, operation: str) -> TokenBucket:
        """The bucket of one operation."""
        if operation not in self._buckets:
            rate, burst = USAGE_PLANS.get(operation, (1.0, 1))
            self._buckets[operation] = TokenBucket(rate, burst, clock=self._clock)
        return self._buckets[operation]

    def observe(self, operation: str, headers: Mapping[str, str]) -> None:
        """Apply the rate an answer reports for its operation."""
        rate = rate_limit_from_headers(headers)
        if rate is not None:
            self.bucket(operation).set_rate(rate)


def rate_limit_from_headers(headers: Mapping[str, str]) -> float | None:
    """The operation's current rate (requests per second) from `x-amzn-RateLimit-Limit`, if sent."""
    raw = headers.get(RATE_LIMIT_HEADER)
    if raw is None:
        return None
    try:
        rate = float(raw.strip())
    except ValueError:
        return None
    return rate if rate > 0 else None


# ---------------------------------------------------------------------- LWA tokens


@dataclass
class AccessToken:
    """An LWA access token and when (monotonic seconds) it stops being safe to send."""

    value: str
    refresh_at: float


# ---------------------------------------------------------------------- the feed ledger


@dataclass(frozen=True)
class FeedEntry:
    """A feed submitted (or being submitted) under an idempotency key: its document, then Amazon's feed id."""

    key: str
    feed_type: str
    amazon_order_id: str
    document_id: str
    # When the attempt recorded its document, just before createFeed: how long it has been in doubt.
    recorded_at: datetime
    feed_id: str | None = None


class FeedLedger(Protocol):
    """Feed submissions by idempotency key, so a repeat finds its feed instead of sending another."""

    async def find(self, key: str) -> FeedEntry | None:
        """The submission under this key, if any."""
        ...

    async def claim(self, entry: FeedEntry) -> FeedEntry:
        """Record a document about to be submitted unless the key has one; the entry that stands (ours or the first)."""
        ...

    async def record(self, key: str, *, document_id: str, feed_id: str) -> None:
        """Amazon accepted this key's document as `feed_id`."""
        ...

    async def release(self, key: str, *, document_id: str) -> None:
        """Amazon refused this key's document, so nothing was submitted: the key is free for a new attempt."""
        ...


class InMemoryFeedLedger:
    """Feed submissions of this process only (tests, the CLI); the worker uses store/feed_ledger.py's."""

    def __init__(self) -> None:
        self.entries: dict[str, FeedEntry] = {}

    async def find(self, key: str) -> FeedEntry | None:
        """The submission under this key, if this process made it."""
        return self.entries.get(key)

    async def claim(self, entry: FeedEntry) -> FeedEntry:
        """Record a document about to be submitted unless the key has one; the entry that stands."""
        return self.entries.setdefault(entry.key, entry)

    async def record(self, key: str, *, document_id: str, feed_id: str) -> None:
        """Amazon accepted this key's document as `feed_id`."""
        entry = self.entries.get(key)
        if entry is not None and entry.document_id == document_id and entry.feed_id is None:
            self.entries[key] = replace(entry, feed_id=feed_id)

    async def release(self, key: str, *, document_id: str) -> None:
        """Amazon refused this key's document: the key is free for a new attempt."""
        entry = self.entries.get(key)
        if entry is not None and entry.document_id == document_id and entry.feed_id is None:
            del self.entries[key]


def create_feed_never_landed(error: AdapterError) -> bool:
    """Whether a failed createFeed certainly created nothing, so its key may be submitted again.

    An answer below 500 is Amazon refusing (or throttling) the call; a refusal by our own bucket or
    a connection never made means nothing was sent. A timeout, a reset or a 5xx may have landed.
    """
    if error.status_code is not None:
        return error.status_code < 500
    if isinstance(error, RateLimitedError):
        return True
    return isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


# ---------------------------------------------------------------------- the client


class AmazonClient:
    """Amazon as an orderflow channel: orders, shipment confirmation, cancel, refund and stock."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: AmazonSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        ledger: FeedLedger | None = None,
    ) -> None:
        self._http = http
        self._settings = settings
        self._clock = clock
        self._limits = RateLimiter(clock=clock)
        self._token: AccessToken | None = None
        self._token_lock = asyncio.Lock()
        self._ledger: FeedLedger = ledger if ledger is not None else InMemoryFeedLedger()

    @property
    def rate_limits(self) -> RateLimiter:
        """The per-operation token buckets (read by tests and metrics)."""
        return self._limits

    # ------------------------------------------------------------------ orders

    async def search_orders(
        self,
        *,
        updated_after: datetime,
        updated_before: datetime | None = None,
        marketplace_id: str,
        page_token: str | None = None,
        page_size: int = 100,
    ) -> OrderPage:
        """One page of orders updated in a window (`updated_before` at least 2 minutes ago, per Amazon)."""
        params: dict[str, Any] = {
            "lastUpdatedAfter": iso(updated_after),
            "marketplaceIds": marketplace_id,
            "maxResultsPerPage": page_size,
            "includedData": ",".join(SEARCH_DATASETS),
        }
        if updated_before is not None:
            params["lastUpdatedBefore"] = iso(updated_before)
        if page_token is not None:
            params["paginationToken"] = page_token
        body = (await self._call("searchOrders", "GET", ORDERS_PATH, params=params)).json()
        return order_page_from_payload(body)

    async def get_order(self, amazon_order_id: str) -> Order:
        """The MFN order as a canonical order, with the recipient's full address; AFN is refused."""
        payload = await self._order_payload(amazon_order_id)
        if fulfillment_channel(payload) == "AFN":
            raise afn_rejected(amazon_order_id)
        if not has_restricted_address(payload):
            # PII withheld: the application has no PII role, so read the order again with a
            # Restricted Data Token for exactly this order.
            path = f"{ORDERS_PATH}/{amazon_order_id}"
            rdt = await self.restricted_data_token(path, ["buyerInfo", "shippingAddress"])
            payload = await self._order_payload(amazon_order_id, access_token=rdt)
        return order_from_payload(payload)

    async def _order_payload(self, amazon_order_id: str, *, access_token: str | None = None) -> dict[str, Any]:
        response = await self._call(
            "getOrder",
            "GET",
            f"{ORDERS_PATH}/{amazon_order_id}",
            params={"includedData": ",".join(ORDER_DATASETS)},
            access_token=access_token,
        )
        order = response.json().get("order")
        if not isinstance(order, dict):
            raise NotFoundError(f"Amazon order {amazon_order_id} not found", system=SYSTEM, vendor_code="NotFound")
        return order

    async def restricted_data_token(self, path: str, data_elements: Sequence[str], method: str = "GET") -> str:
        """A Restricted Data Token for one v0 resource (sent instead of the access token)."""
        body = {"restrictedResources": [{"method": method, "path": path, "dataElements": list(data_elements)}]}
        response = await self._call(
            "createRestrictedDataToken", "POST", "/tokens/2021-03-01/restrictedDataToken", json=body
        )
        return str(response.json()["restrictedDataToken"])

    # ------------------------------------------------------------------ shipments

    async def confirm_shipment(self, amazon_order_id: str, shipment: Shipment) -> None:
        """Tell Amazon a package shipped (v0 confirmShipment); partial shipments allowed, repeats edit it."""
        payload = await self._order_payload(amazon_order_id)
        if fulfillment_channel(payload) == "AFN":
            raise afn_rejected(amazon_order_id)
        body = shipment_confirmation_payload(payload, shipment, default_marketplace=self._settings.marketplace_ids[0])
        await self._call(
            "confirmShipment", "POST", f"/orders/v0/orders/{amazon_order_id}/shipmentConfirmation", json=body
        )

    # ------------------------------------------------------------------ cancel and refund (feeds)

    async def cancel_order(self, amazon_order_id: str, *, reason: str, idempotency_key: str) -> str:
        """Cancel the order's unshipped items through the acknowledgement feed; returns the feed id."""
        # A second acknowledgement of a cancelled order changes nothing, so a submission left in
        # doubt is sent again rather than parking the saga's undo for an operator.
        existing = await self.find_feed(idempotency_key, repeat_if_unknown=True)
        if existing is not None:
            return existing
        payload = await self._order_payload(amazon_order_id)
        document = acknowledgement_feed(
            payload, reason=reason, seller_id=self._settings.seller_id, merchant_order_id=idempotency_key
        )
        return await self._submit_feed(ACKNOWLEDGEMENT_FEED, document, idempotency_key, payload)

    async def refund(self, amazon_order_id: str, refund: Refund, *, idempotency_key: str) -> ChannelRefundRef:
        """Refund through the payment adjustment feed, once per key; succeeds when the processing report is clean.

        A feed still processing is a `TransientError`: Temporal retries, and the retry finds the same
        feed by its key and checks its report again instead of submitting another. A submission whose
        createFeed answer was lost is never sent again: that would refund the buyer twice (`find_feed`).
        """
        feed_id = await self.find_feed(idempotency_key)
        if feed_id is None:
            payload = await self._order_payload(amazon_order_id)
            document = adjustment_feed(payload, refund, seller_id=self._settings.seller_id, key=idempotency_key)
            feed_id = await self._submit_feed(ADJUSTMENT_FEED, document, idempotency_key, payload)
        status = await self._await_feed(feed_id)
        if not status.done:
            raise TransientError(
                f"payment adjustment feed {feed_id} is still {status.processing_status}",
                system=SYSTEM,
                vendor_code=status.processing_status,
                details={"feed_id": feed_id},
            )
        if not status.succeeded:
            raise ValidationRejectedError(
                f"Amazon refused the refund feed {feed_id}: {'; '.join(status.errors) or status.processing_status}",
                system=SYSTEM,
                vendor_code=status.processing_status,
                details=status.model_dump(),
            )
        return ChannelRefundRef(channel_refund_id=feed_id, amount=refund.total)

    async def find_feed(self, idempotency_key: str, *, repeat_if_unknown: bool = False) -> str | None:
        """The feed already submitted under this key; None when none was (or one in doubt may be repeated).

        Amazon's feeds carry no idempotency key and `getFeed(s)` never returns a feed's input, so
        the key-to-feed link lives with us, in the ledger: the database's in the worker, shared by
        every worker and surviving restarts (store/feed_ledger.py); in-memory for tests and the CLI.

        The feed document is recorded before createFeed and the feed id when it answers, so an
        entry without a feed id is a submission in doubt. While it is younger than an attempt can
        take to send createFeed and record its answer, another attempt is still at work: this one
        is retried (`TransientError`). Older, its attempt died or lost createFeed's answer, and
        Amazon cannot tell which (nothing links a feed to its document). A repeatable feed is then
        sent again; any other (a refund) is a `ConflictError` that parks the saga, because a second
        payment adjustment refunds the buyer twice. An operator checks Seller Central's feed
        history and settles the entry (its feed id, or released to submit again).
        """
        entry = await self._ledger.find(idempotency_key)
        if entry is None or entry.feed_id is not None:
            return None if entry is None else entry.feed_id
        in_doubt = datetime.now(UTC) - entry.recorded_at
        if in_doubt < self.submission_window:
            raise TransientError(
                f"{entry.feed_type} for {idempotency_key} is being submitted by another attempt "
                f"(document {entry.document_id}, {in_doubt.total_seconds():.0f}s ago)",
                system=SYSTEM,
                vendor_code="FeedSubmissionInFlight",
                details={"document_id": entry.document_id},
            )
        if repeat_if_unknown:
            await self._ledger.release(idempotency_key, document_id=entry.document_id)
            return None
        raise ConflictError(
            f"{entry.feed_type} for {idempotency_key} (Amazon order {entry.amazon_order_id}) may have been "
            f"submitted at {iso(entry.recorded_at)} but Amazon's answer was lost (document {entry.document_id}); "
            "check Seller Central's feed upload history before submitting it again",
            system=SYSTEM,
            vendor_code="FeedSubmissionUnknown",
            details={"document_id": entry.document_id, "recorded_at": iso(entry.recorded_at)},
        )

    @property
    def submission_window(self) -> timedelta:
        """How long a live attempt may take from recording its feed document to recording createFeed's answer."""
        s = self._settings
        # Each try of createFeed may wait its bucket, exchange a token and wait for the answer.
        per_try = s.max_throttle_wait_seconds + 2 * s.timeout_seconds
        return timedelta(seconds=(MAX_THROTTLE_WAITS + 1) * per_try + LEDGER_WRITE_SECONDS)

    async def get_feed(self, feed_id: str) -> FeedStatus:
        """The feed's processing status and, once done, its processing report's summary."""
        feed = (await self._call("getFeed", "GET", f"{FEEDS_PATH}/feeds/{feed_id}")).json()
        status = FeedStatus(
            feed_id=str(feed.get("feedId") or feed_id),
            feed_type=str(feed.get("feedType") or ""),
            processing_status=str(feed.get("processingStatus") or "IN_QUEUE"),
            result_document_id=feed.get("resultFeedDocumentId"),
        )
        if status.processing_status != "DONE" or not status.result_document_id:
            return status
        report = await self._download_document(status.result_document_id)
        return status.model_copy(update=processing_report_summary(report))

    async def _submit_feed(self, feed_type: str, document: str, key: str, payload: Mapping[str, Any]) -> str:
        created = (
            await self._call(
                "createFeedDocument", "POST", f"{FEEDS_PATH}/documents", json={"contentType": FEED_CONTENT_TYPE}
            )
        ).json()
        try:
            upload = await self._http.put(
                created["url"],
                content=document.encode(),
                headers={"Content-Type": FEED_CONTENT_TYPE},
                timeout=self._settings.timeout_seconds,
            )
        except httpx.TransportError as exc:
            raise transport_error(exc, system=SYSTEM) from exc
        if upload.status_code >= 400:
            raise error_from_response(upload)
        marketplace = (payload.get("salesChannel") or {}).get("marketplaceId") or self._settings.marketplace_ids[0]
        body = {
            "feedType": feed_type,
            "marketplaceIds": [marketplace],
            "inputFeedDocumentId": created["feedDocumentId"],
        }
        document_id = str(created["feedDocumentId"])
        claimed = FeedEntry(
            key=key,
            feed_type=feed_type,
            amazon_order_id=str(payload.get("orderId") or ""),
            document_id=document_id,
            recorded_at=datetime.now(UTC),
        )
        # Recorded before createFeed: a crash or a lost answer from here on leaves the entry in doubt,
        # never absent, so no later attempt takes silence for "never submitted".
        standing = await self._ledger.claim(claimed)
        if standing.document_id != document_id:
            # Another attempt recorded its document first (the uploaded one here is left unused).
            if standing.feed_id is not None:
                return standing.feed_id
            raise TransientError(
                f"{feed_type} for {key} is being submitted by another attempt (document {standing.document_id})",
                system=SYSTEM,
                vendor_code="FeedSubmissionInFlight",
                details={"document_id": standing.document_id},
            )
        try:
            answer = await self._call("createFeed", "POST", f"{FEEDS_PATH}/feeds", json=body)
        except AdapterError as error:
            if create_feed_never_landed(error):
                await self._ledger.release(key, document_id=document_id)
            raise
        feed_id = str(answer.json()["feedId"])
        await self._ledger.record(key, document_id=document_id, feed_id=feed_id)
        return feed_id

    async def _await_feed(self, feed_id: str) -> FeedStatus:
        """Poll the feed for as long as a throttle may be waited out in the call, then report where it is."""
        polls = int(self._settings.max_throttle_wait_seconds / FEED_POLL_SECONDS)
        status = await self.get_feed(feed_id)
        for _ in range(polls):
            if status.done:
                break
            await asyncio.sleep(FEED_POLL_SECONDS)
            status = await self.get_feed(feed_id)
        return status

    async def _download_document(self, document_id: str) -> str:
        meta = (await self._call("getFeedDocument", "GET", f"{FEEDS_PATH}/documents/{document_id}")).json()
        try:
            response = await self._http.get(meta["url"], timeout=self._settings.timeout_seconds)
        except httpx.TransportError as exc:
            raise transport_error(exc, system=SYSTEM) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        content = response.content
        if meta.get("compressionAlgorithm") == "GZIP":
            content = gzip.decompress(content)
        return content.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ inventory

    async def update_availability(self, sku: str, quantity: int) -> None:
        """Set the merchant-fulfilled quantity Amazon may sell (Listings Items patch, `replace`)."""
        body = {
            "productType": "PRODUCT",
            "patches": [
                {
                    "op": "replace",
                    "path": "/attributes/fulfillment_availability",
                    "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": max(0, quantity)}],
                }
            ],
        }
        response = await self._call(
            "patchListingsItem",
            "PATCH",
            f"/listings/2021-08-01/items/{self._settings.seller_id}/{sku}",
            params={"marketplaceIds": ",".join(self._settings.marketplace_ids)},
            json=body,
        )
        result = response.json()
        if result.get("status") == "INVALID":
            issues = [i for i in result.get("issues") or [] if i.get("severity") == "ERROR"]
            message = "; ".join(f"{i.get('code')}: {i.get('message')}" for i in issues) or "listing patch INVALID"
            raise ValidationRejectedError(message, system=SYSTEM, vendor_code="INVALID", details=result)

    # ------------------------------------------------------------------ transport

    async def access_token(self) -> str:
        """A valid LWA access token, exchanged from the refresh token only when the cached one is near expiry."""
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        async with self._token_lock:
            # Another call may have refreshed while this one waited for the lock.
            token = self._token
            if token is not None and self._clock() < token.refresh_at:
                return token.value
            self._token = await self._exchange_refresh_token()
            return self._token.value

    async def _exchange_refresh_token(self) -> AccessToken:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self._settings.refresh_token.get_secret_value(),
            "client_id": self._settings.client_id,
            "client_secret": self._settings.client_secret.get_secret_value(),
        }
        started = self._clock()
        try:
            response = await self._http.post(self._settings.lwa_url, data=form, timeout=self._settings.timeout_seconds)
        except httpx.TransportError as exc:
            raise transport_error(exc, system=SYSTEM) from exc
        if response.status_code >= 400:
            raise lwa_error(response)
        body = response.json()
        expires_in = float(body.get("expires_in") or 3600)
        refresh_in = max(0.0, expires_in - TOKEN_REFRESH_MARGIN_SECONDS)
        return AccessToken(value=str(body["access_token"]), refresh_at=started + refresh_in)

    def _invalidate_token(self) -> None:
        self._token = None

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        access_token: str | None = None,
    ) -> httpx.Response:
        """One SP-API call: its bucket's turn, the token, and throttles waited out when short."""
        bucket = self._limits.bucket(operation)
        url = f"{self._settings.base_url.rstrip('/')}{path}"
        reauthenticated = False
        for attempt in range(MAX_THROTTLE_WAITS + 1):
            wait = bucket.wait_time()
            if wait > self._settings.max_throttle_wait_seconds:
                raise RateLimitedError(
                    f"{operation}: the usage plan allows the next call in {wait:.1f}s",
                    retry_after=wait,
                    system=SYSTEM,
                    vendor_code="QuotaExceeded",
                    details={"operation": operation, "rate": bucket.rate},
                )
            wait = bucket.take()
            if wait > 0:
                await asyncio.sleep(wait)
            token = access_token or await self.access_token()
            headers = {"x-amz-access-token": token, "Accept": "application/json", "x-amz-date": amz_date()}
            try:
                response = await self._http.request(
                    method, url, params=params, json=json, headers=headers, timeout=self._settings.timeout_seconds
                )
            except httpx.TransportError as exc:
                raise transport_error(exc, system=SYSTEM) from exc
            self._limits.observe(operation, response.headers)
            if response.status_code == 429:
                wait = throttle_wait(response.headers, bucket, attempt)
                if wait <= self._settings.max_throttle_wait_seconds and attempt < MAX_THROTTLE_WAITS:
                    await asyncio.sleep(wait)
                    continue
                raise error_from_response(response, retry_after=wait)
            if response.status_code == 403 and access_token is None and not reauthenticated:
                # The cached token may have been revoked or expired early: exchange once more.
                self._invalidate_token()
                reauthenticated = True
                continue
            if response.status_code >= 400:
                raise error_from_response(response)
            return response
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def throttle_wait(headers: Mapping[str, str], bucket: TokenBucket, attempt: int) -> float:
    """How long to back off after a 429, with the bucket emptied to match.

    Amazon's `Retry-After`, when sent, is trusted. Without it the bucket is empty, so the wait is at
    least one refill interval, growing exponentially with jitter so many workers do not retry in step.
    """
    retry_after = retry_after_seconds(headers)
    if retry_after is not None:
        bucket.empty_for(retry_after)
        return retry_after
    bucket.drain()
    backoff = (1.0 / bucket.rate) * (2**attempt) * (1 + random.random())
    return max(bucket.wait_time(), backoff)


def iso(moment: datetime) -> str:
    """An ISO 8601 UTC timestamp as SP-API expects it."""
    if moment.tzinfo is None:
        raise ValueError("SP-API times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def amz_date() -> str:
    """The `x-amz-date` header value (good practice, not required without SigV4)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


# ---------------------------------------------------------------------- errors


def error_from_response(response: httpx.Response, *, retry_after: float | None = None) -> AdapterError:
    """An SP-API `errors[]` answer as a typed error, keeping Amazon's code, message and request id."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = first.get("code")
    message = first.get("message") or response.reason_phrase or f"HTTP {response.status_code}"
    if first.get("details"):
        message = f"{message} ({first['details']})"
    details = {"errors": errors, "request_id": response.headers.get("x-amzn-RequestId")}
    if response.status_code == 429 or code == "QuotaExceeded":
        return RateLimitedError(
            message,
            retry_after=retry_after if retry_after is not None else retry_after_seconds(response.headers),
            system=SYSTEM,
            status_code=response.status_code,
            vendor_code=code or "QuotaExceeded",
            details=details,
        )
    return classify_status(response.status_code, message, system=SYSTEM, vendor_code=code, details=details)


def lwa_error(response: httpx.Response) -> AdapterError:
    """A refused LWA exchange: bad credentials are permanent, an LWA outage is transient."""
    try:
        body: Any = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    code = body.get("error")
    message = body.get("error_description") or response.reason_phrase or f"HTTP {response.status_code}"
    if code in ("invalid_grant", "invalid_client", "unauthorized_client", "invalid_request"):
        return AuthenticationError(f"LWA: {message}", system=SYSTEM, status_code=response.status_code, vendor_code=code)
    return classify_status(
        response.status_code,
        f"LWA: {message}",
        system=SYSTEM,
        vendor_code=code,
        retry_after=retry_after_seconds(response.headers),
    )


def afn_rejected(amazon_order_id: str) -> ValidationRejectedError:
    """Why an Amazon-fulfilled order gets no saga: Amazon ships it, not our warehouse."""
    return ValidationRejectedError(
        f"{AFN_REASON}: {amazon_order_id}", system=SYSTEM, vendor_code="AFN", details={"reason": AFN_REASON}
    )


# ---------------------------------------------------------------------- mapping: Amazon -> canonical


def fulfillment_channel(payload: Mapping[str, Any]) -> Literal["MFN", "AFN"]:
    """MFN for merchant-fulfilled orders, AFN for orders Amazon fulfils (FBA)."""
    fulfilled_by = ((payload.get("fulfillment") or {}).get("fulfilledBy") or "MERCHANT").upper()
    return "AFN" if fulfilled_by == "AMAZON" else "MFN"


def buyer_requested_cancel(payload: Mapping[str, Any]) -> bool:
    """Whether the buyer asked to cancel any item that Amazon has not cancelled yet."""
    for item in payload.get("orderItems") or []:
        cancellation = item.get("cancellation") or {}
        request = cancellation.get("cancellationRequest") or {}
        if (request.get("requester") or "").upper() == "BUYER" and not cancellation.get("cancellationExecution"):
            return True
    return False


def order_summary_from_payload(payload: Mapping[str, Any]) -> AmazonOrderSummary:
    """A `searchOrders` order as the poller's summary."""
    return AmazonOrderSummary(
        amazon_order_id=str(payload["orderId"]),
        status=str((payload.get("fulfillment") or {}).get("fulfillmentStatus") or "PENDING"),
        fulfillment_channel=fulfillment_channel(payload),
        last_updated=parse_time(payload["lastUpdatedTime"]),
        cancellation_requested=buyer_requested_cancel(payload),
        marketplace_id=(payload.get("salesChannel") or {}).get("marketplaceId"),
    )


def order_page_from_payload(body: Mapping[str, Any]) -> OrderPage:
    """A `searchOrders` answer as one page of summaries."""
    return OrderPage(
        orders=[order_summary_from_payload(o) for o in body.get("orders") or []],
        next_token=(body.get("pagination") or {}).get("nextToken") or None,
    )


def parse_time(value: str) -> datetime:
    """An SP-API ISO 8601 time (with `Z`) as an aware datetime."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rejected(message: str, field_name: str) -> ValidationRejectedError:
    return ValidationRejectedError(message, system=SYSTEM, vendor_code="MAPPING", details={"field": field_name})


def money(value: Mapping[str, Any] | None, currency: str, where: str) -> Money:
    """An SP-API Money (`amount` a decimal string) as canonical money in the order's currency."""
    if not value:
        return Money.zero(currency)
    try:
        amount = Decimal(str(value["amount"]))
    except (KeyError, InvalidOperation) as exc:
        raise _rejected(f"{where} is not an amount: {value!r}", where) from exc
    found = str(value.get("currencyCode") or currency).upper()
    if found != currency:
        raise _rejected(f"{where} is in {found} but the order is in {currency}", where)
    return Money(amount=amount, currency=currency)


def _breakdowns(proceeds: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    return {str(b.get("type")): b for b in (proceeds or {}).get("breakdowns") or [] if b.get("type")}


def _detail(breakdown: Mapping[str, Any] | None, subtype: str, currency: str, where: str) -> Money | None:
    for detail in (breakdown or {}).get("detailedBreakdowns") or []:
        if detail.get("subtype") == subtype:
            return money(detail.get("value"), currency, where)
    return None


def _tax_rate(tax: Money, base: Money) -> Decimal:
    if base.amount <= 0:
        return Decimal(0)
    return (tax.amount / base.amount).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)


def order_currency(payload: Mapping[str, Any]) -> str:
    """The order's currency, from its grand total or its first priced item."""
    grand = (payload.get("proceeds") or {}).get("grandTotal") or {}
    if grand.get("currencyCode"):
        return str(grand["currencyCode"]).upper()
    for item in payload.get("orderItems") or []:
        unit = ((item.get("product") or {}).get("price") or {}).get("unitPrice") or {}
        if unit.get("currencyCode"):
            return str(unit["currencyCode"]).upper()
    raise _rejected(f"order {payload.get('orderId')} names no currency", "proceeds.grandTotal")


def order_from_payload(payload: Mapping[str, Any]) -> Order:
    """An Orders 2026-01-01 order (with BUYER, RECIPIENT, PROCEEDS, PROMOTION) as a canonical order.

    Money comes from each item's proceeds: ITEM is the line's price (unit price times quantity),
    SHIPPING its shipping charge, TAX its tax split by subtype (ITEM, SHIPPING) and DISCOUNT its
    promotions split the same way. Amazon reports discounts as negative proceeds; canonical
    discounts are positive amounts taken off.
    """
    order_id = str(payload.get("orderId") or "")
    if not order_id:
        raise _rejected("order has no orderId", "orderId")
    if fulfillment_channel(payload) == "AFN":
        raise afn_rejected(order_id)
    currency = order_currency(payload)
    lines: list[OrderLine] = []
    shipping_amount = Money.zero(currency)
    shipping_tax = Money.zero(currency)
    shipping_discount = Money.zero(currency)
    for i, item in enumerate(payload.get("orderItems") or []):
        where = f"orderItems[{i}]"
        product = item.get("product") or {}
        sku = str(product.get("sellerSku") or "").strip()
        if not sku:
            raise _rejected(
                f"order {order_id} item {item.get('orderItemId')} has no seller SKU", f"{where}.product.sellerSku"
            )
        quantity = int(item.get("quantityOrdered") or 0)
        if quantity <= 0:
            continue  # a fully cancelled item carries nothing to fulfil
        parts = _breakdowns(item.get("proceeds"))
        unit_price = money((product.get("price") or {}).get("unitPrice"), currency, f"{where}.product.price.unitPrice")
        if unit_price.amount == 0 and "ITEM" in parts:
            item_total = money(parts["ITEM"].get("subtotal"), currency, f"{where}.proceeds.ITEM")
            unit_price = Money(amount=item_total.amount / quantity, currency=currency)
        tax = parts.get("TAX")
        item_tax = _detail(tax, "ITEM", currency, f"{where}.proceeds.TAX.ITEM")
        item_shipping_tax = _detail(tax, "SHIPPING", currency, f"{where}.proceeds.TAX.SHIPPING")
        if item_tax is None:
            # No split: everything that is not shipping tax is the item's.
            whole = money(tax.get("subtotal") if tax else None, currency, f"{where}.proceeds.TAX")
            item_tax = whole - (item_shipping_tax or Money.zero(currency))
        discount = parts.get("DISCOUNT")
        item_discount = _detail(discount, "ITEM", currency, f"{where}.proceeds.DISCOUNT.ITEM")
        item_shipping_discount = _detail(discount, "SHIPPING", currency, f"{where}.proceeds.DISCOUNT.SHIPPING")
        if item_discount is None:
            whole = money(discount.get("subtotal") if discount else None, currency, f"{where}.proceeds.DISCOUNT")
            item_discount = Money(amount=abs(whole.amount), currency=currency) - Money(
                amount=abs((item_shipping_discount or Money.zero(currency)).amount), currency=currency
            )
        item_discount = Money(amount=abs(item_discount.amount), currency=currency)
        promotions = [
            str(p["promotionId"])
            for p in ((item.get("promotion") or {}).get("breakdowns") or [])
            if p.get("promotionId")
        ]
        discounts = []
        if item_discount.amount > 0:
            discounts.append(
                Discount(
                    title=", ".join(promotions) or "Amazon promotion",
                    code=promotions[0] if promotions else None,
                    amount=item_discount,
                )
            )
        gross = unit_price * quantity
        taxes = []
        if item_tax.amount != 0:
            taxes.append(TaxLine(title="Amazon tax", rate=_tax_rate(item_tax, gross - item_discount), amount=item_tax))
        lines.append(
            OrderLine(
                line_id=str(item.get("orderItemId")),
                sku=sku,
                name=str(product.get("title") or ""),
                quantity=quantity,
                unit_price=unit_price,
                discounts=discounts,
                tax_lines=taxes,
            )
        )
        if "SHIPPING" in parts:
            shipping_amount += money(parts["SHIPPING"].get("subtotal"), currency, f"{where}.proceeds.SHIPPING")
        shipping_tax += item_shipping_tax or Money.zero(currency)
        shipping_discount += Money(
            amount=abs((item_shipping_discount or Money.zero(currency)).amount), currency=currency
        )
    if not lines:
        raise _rejected(f"order {order_id} has no items left to fulfil", "orderItems")
    fulfillment = payload.get("fulfillment") or {}
    service = fulfillment.get("fulfillmentServiceLevel") or "STANDARD"
    shipping: list[ShippingCharge] = []
    if shipping_amount.amount or shipping_tax.amount:
        shipping.append(
            ShippingCharge(
                title=str(service),
                code=str(service),
                amount=shipping_amount,
                discounts=[Discount(title="Amazon shipping promotion", amount=shipping_discount)]
                if shipping_discount.amount > 0
                else [],
                tax_lines=[
                    TaxLine(
                        title="Amazon shipping tax",
                        rate=_tax_rate(shipping_tax, shipping_amount - shipping_discount),
                        amount=shipping_tax,
                    )
                ]
                if shipping_tax.amount
                else [],
            )
        )
    ship_to = address_from_payload(((payload.get("recipient") or {}).get("deliveryAddress")) or {}, order_id)
    buyer = payload.get("buyer") or {}
    customer = Customer(
        channel_customer_id=buyer.get("buyerEmail") or None,
        name=buyer.get("buyerName") or ship_to.name,
        email=buyer.get("buyerEmail") or None,
    )
    computed = total([line.net + line.tax_total for line in lines], currency)
    computed = computed + total(
        [
            c.amount
            - total([d.amount for d in c.discounts], currency)
            + total([t.amount for t in c.tax_lines], currency)
            for c in shipping
        ],
        currency,
    )
    return Order(
        channel=Channel.AMAZON,
        channel_order_id=order_id,
        order_number=order_id,
        placed_at=parse_time(str(payload.get("createdTime"))),
        currency=currency,
        customer=customer,
        ship_to=ship_to,
        lines=lines,
        shipping=shipping,
        # The buyer's total is what the lines add up to; grandTotal may hold a delivery tip on top.
        total=computed,
        financial_status=FinancialStatus.PAID,
        ship_method=str(service),
    )


def has_restricted_address(payload: Mapping[str, Any]) -> bool:
    """Whether the order came with the recipient's name and street (MFN PII), not just city and postcode."""
    address = ((payload.get("recipient") or {}).get("deliveryAddress")) or {}
    return bool(address.get("name") and address.get("addressLine1"))


def address_from_payload(address: Mapping[str, Any], order_id: str) -> Address:
    """The recipient's delivery address; refused if Amazon withheld its restricted parts."""
    if not address.get("name") or not address.get("addressLine1"):
        raise _rejected(
            f"order {order_id}: the delivery address is restricted data and was not returned",
            "recipient.deliveryAddress",
        )
    line2 = " ".join(p for p in (address.get("addressLine2"), address.get("addressLine3")) if p) or None
    return Address(
        name=address["name"],
        company=address.get("companyName") or None,
        line1=address["addressLine1"],
        line2=line2,
        city=address.get("city") or address.get("municipality") or "",
        region=address.get("stateOrRegion") or None,
        postal_code=address.get("postalCode") or None,
        country=address.get("countryCode") or "",
        phone=address.get("phone") or None,
    )


# ---------------------------------------------------------------------- mapping: canonical -> Amazon


def package_reference_id(shipment_id: str) -> str:
    """A positive number unique within the order, stable for a shipment, so a repeat edits the same package."""
    if shipment_id.isdigit() and int(shipment_id) > 0:
        return shipment_id
    return str(int(hashlib.sha256(shipment_id.encode()).hexdigest()[:12], 16) + 1)


def shipment_confirmation_payload(
    payload: Mapping[str, Any], shipment: Shipment, *, default_marketplace: str
) -> dict[str, Any]:
    """The v0 confirmShipment body for one canonical shipment, its SKUs placed on the order's item ids.

    Each SKU's units go to the order items of that SKU with units still unshipped, in order. A
    package Amazon already has (same reference) keeps its items: the repeat is an edit.
    """
    order_id = str(payload.get("orderId"))
    reference = package_reference_id(shipment.shipment_id)
    known = next(
        (p for p in payload.get("packages") or [] if str(p.get("packageReferenceId")) == reference),
        None,
    )
    order_items: list[dict[str, Any]]
    if known is not None:
        order_items = [
            {"orderItemId": str(i["orderItemId"]), "quantity": int(i["quantity"])}
            for i in known.get("packageItems") or []
        ]
    else:
        open_units: list[tuple[str, str, int]] = []
        for item in payload.get("orderItems") or []:
            fulfilment = item.get("fulfillment") or {}
            unshipped = fulfilment.get("quantityUnfulfilled")
            if unshipped is None:
                unshipped = int(item.get("quantityOrdered") or 0) - int(fulfilment.get("quantityFulfilled") or 0)
            sku = str((item.get("product") or {}).get("sellerSku") or "")
            open_units.append((sku, str(item.get("orderItemId")), int(unshipped)))
        order_items = []
        for line in shipment.lines:
            left = line.quantity
            for index, (sku, item_id, unshipped) in enumerate(open_units):
                if sku != line.sku or unshipped <= 0 or left <= 0:
                    continue
                take = min(left, unshipped)
                order_items.append({"orderItemId": item_id, "quantity": take})
                open_units[index] = (sku, item_id, unshipped - take)
                left -= take
            if left > 0:
                raise _rejected(
                    f"shipment {shipment.shipment_id} ships {line.quantity} of {line.sku}, "
                    f"more than Amazon order {order_id} has unshipped",
                    "shipment.lines",
                )
    carrier = shipment.tracking.carrier
    code = CARRIER_CODES.get(carrier.strip().lower().replace(" ", ""), "Other")
    detail: dict[str, Any] = {
        "packageReferenceId": reference,
        "carrierCode": code,
        "trackingNumber": shipment.tracking.number,
        "shipDate": iso(shipment.shipped_at),
        "orderItems": order_items,
    }
    if code == "Other":
        detail["carrierName"] = carrier
    if shipment.tracking.service:
        detail["shippingMethod"] = shipment.tracking.service
    marketplace = (payload.get("salesChannel") or {}).get("marketplaceId") or default_marketplace
    return {"marketplaceId": marketplace, "packageDetail": detail}


def cancel_reason_code(reason: str) -> str:
    """The acknowledgement feed's CancelReason for orderflow's free-text reason."""
    text = reason.lower()
    for word, code in CANCEL_REASONS:
        if word in text:
            return code
    return "GeneralAdjustment"


def _envelope(message_type: str, seller_id: str, messages: list[str]) -> str:
    body = "".join(f"<Message><MessageID>{n}</MessageID>{m}</Message>" for n, m in enumerate(messages, start=1))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<AmazonEnvelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:noNamespaceSchemaLocation="amzn-envelope.xsd">'
        f"<Header><DocumentVersion>1.01</DocumentVersion><MerchantIdentifier>{escape(seller_id)}</MerchantIdentifier></Header>"
        f"<MessageType>{message_type}</MessageType>{body}</AmazonEnvelope>"
    )


def acknowledgement_feed(payload: Mapping[str, Any], *, reason: str, seller_id: str, merchant_order_id: str) -> str:
    """The XML acknowledgement feed cancelling every item of the order (StatusCode Failure)."""
    code = cancel_reason_code(reason)
    items = "".join(
        f"<Item><AmazonOrderItemCode>{escape(str(i.get('orderItemId')))}</AmazonOrderItemCode>"
        f"<CancelReason>{code}</CancelReason></Item>"
        for i in payload.get("orderItems") or []
    )
    message = (
        f"<OrderAcknowledgement><AmazonOrderID>{escape(str(payload.get('orderId')))}</AmazonOrderID>"
        f"<MerchantOrderID>{escape(merchant_order_id[:40])}</MerchantOrderID>"
        f"<StatusCode>Failure</StatusCode>{items}</OrderAcknowledgement>"
    )
    return _envelope("OrderAcknowledgement", seller_id, [message])


def _amount(kind: str, value: Money) -> str:
    return (
        f"<Component><Type>{kind}</Type><Amount currency={quoteattr(value.currency)}>"
        f"{value.rounded().amount}</Amount></Component>"
    )


def adjustment_feed(payload: Mapping[str, Any], refund: Refund, *, seller_id: str, key: str) -> str:
    """The XML payment adjustment feed for a canonical refund, split into principal and tax per item.

    A refund line's amount includes its tax (see return_to_refund.refund_for_receipts); the
    tax share is the item's tax in proportion to what the buyer paid for it. Shipping goes on
    the first item, as Amazon adjusts shipping per item.
    """
    currency = order_currency(payload)
    items = {str(i.get("orderItemId")): i for i in payload.get("orderItems") or []}
    adjusted: list[str] = []
    reason = "CustomerReturn" if (refund.reason or "") == "return" else "GeneralAdjustment"
    shipping_left = refund.shipping
    for n, line in enumerate(refund.lines):
        if line.amount.amount <= 0:
            continue
        item = items.get(line.line_id)
        if item is None:
            raise _rejected(
                f"refund line {line.line_id} ({line.sku}) is not on order {payload.get('orderId')}", "lines"
            )
        parts = _breakdowns(item.get("proceeds"))
        paid = money((parts.get("ITEM") or {}).get("subtotal"), currency, "ITEM")
        tax = _detail(parts.get("TAX"), "ITEM", currency, "TAX.ITEM")
        if tax is None:
            tax = money((parts.get("TAX") or {}).get("subtotal"), currency, "TAX")
        discount = Money(
            amount=abs(money((parts.get("DISCOUNT") or {}).get("subtotal"), currency, "DISCOUNT").amount),
            currency=currency,
        )
        base = paid - discount + tax
        tax_share = (
            Money(amount=line.amount.amount * tax.amount / base.amount, currency=currency).rounded()
            if base.amount > 0
            else Money.zero(currency)
        )
        components = _amount("Principal", line.amount - tax_share) + _amount("Tax", tax_share)
        if shipping_left is not None and shipping_left.amount > 0:
            components += _amount("Shipping", shipping_left)
            shipping_left = None
        adjusted.append(
            f"<AdjustedItem><AmazonOrderItemCode>{escape(line.line_id)}</AmazonOrderItemCode>"
            f"<MerchantAdjustmentItemID>{escape(f'{key}:{n}'[:40])}</MerchantAdjustmentItemID>"
            f"<AdjustmentReason>{reason}</AdjustmentReason>"
            f"<ItemPriceAdjustments>{components}</ItemPriceAdjustments></AdjustedItem>"
        )
    if not adjusted:
        raise _rejected("the refund has no line with money to return", "lines")
    order_id = escape(str(payload.get("orderId")))
    message = (
        f"<OrderAdjustment><AmazonOrderID>{order_id}</AmazonOrderID><ActionType>Refund</ActionType>"
        f"{''.join(adjusted)}</OrderAdjustment>"
    )
    return _envelope("OrderAdjustment", seller_id, [message])


def processing_report_summary(report: str) -> dict[str, Any]:
    """The counts and error messages of a feed processing report (XML, or the JSON form)."""
    text = report.strip()
    if text.startswith("{"):
        body = json.loads(text)
        summary = body.get("summary") or {}
        issues = [i for i in body.get("issues") or [] if (i.get("severity") or "ERROR") == "ERROR"]
        return {
            "messages_processed": summary.get("messagesProcessed"),
            "messages_successful": summary.get("messagesAccepted"),
            "messages_with_error": int(summary.get("messagesInvalid") or summary.get("errors") or len(issues)),
            "errors": [f"{i.get('code')}: {i.get('message')}" for i in issues],
        }
    try:
        # Amazon's own report; the stdlib parser expands no external entities (expat's default).
        root = ElementTree.fromstring(text)  # noqa: S314
    except ElementTree.ParseError as exc:
        raise TransientError(f"unreadable processing report: {exc}", system=SYSTEM, vendor_code="REPORT") from exc

    def count(tag: str) -> int | None:
        found = root.find(f".//ProcessingSummary/{tag}")
        return int(found.text) if found is not None and found.text else None

    errors = [
        f"{r.findtext('ResultMessageCode') or ''}: {r.findtext('ResultDescription') or ''}".strip(": ")
        for r in root.iter("Result")
        if (r.findtext("ResultCode") or "").lower() == "error"
    ]
    return {
        "messages_processed": count("MessagesProcessed"),
        "messages_successful": count("MessagesSuccessful"),
        "messages_with_error": count("MessagesWithError") or len(errors),
        "errors": errors,
    }

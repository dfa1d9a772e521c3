"""The warehouse adapter: ShipBob's REST API (2026-01) spoken in orderflow's canonical models.

- Authentication is a personal access token (`Authorization: Bearer ...`); every call also names
  the channel (`shipbob_channel_id`), which ShipBob requires on writes and uses to scope reads.
- ShipBob allows 150 calls per minute in a sliding window. A 429 carries `x-retry-after`; a short
  wait is taken inside the call, a longer one goes back to Temporal as `RateLimitedError`.
- Idempotency: an order's `reference_id` is unique per account, and orderflow sets it to the
  fulfillment order's `reference`. A duplicate create (422), or a create whose answer was lost
  (timeout, 5xx), is resolved by reading the order back by reference.
- Webhooks are signed the Standard Webhooks way; `verify_webhook` checks them over the raw body.
- Reservations (`inventory-reservation`) are an extension beyond ShipBob, which commits stock only
  when an order is created: see docs/adapters/wms.md for the resource and for what to do with a
  WMS that has none.
- Returns: a ShipBob return's `reference_id` is unique too, so `create_return` is idempotent the
  same way. The warehouse dispositions every unit itself when it processes the return (Restock
  puts a sellable unit back on the shelf; Quarantine or Dispose keep a damaged one off it), and
  `return.completed` reports that per item: `return_receipt_from_webhook` reads it as one receipt.
- Partial cancellation: ShipBob cancels whole shipments, and cuts an unshipped shipment's line
  items with `:updateLineItems` (the complete list each time); both are refused once a shipment is
  picked, packed or labelled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from orderflow.adapters.errors import (
    AdapterError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    TransientError,
    ValidationRejectedError,
    classify_status,
    retry_after_seconds,
    transport_error,
)
from orderflow.canonical import (
    Address,
    Allocation,
    AllocationLine,
    AllocationStatus,
    CancellationOutcome,
    FulfillmentCancellation,
    FulfillmentLine,
    FulfillmentOrder,
    FulfillmentOrderRequest,
    FulfillmentStatus,
    ItemCondition,
    Label,
    ReturnLine,
    Shipment,
    ShipmentLine,
    StockLevel,
    Tracking,
)
from orderflow.canonical.returns import ReturnReceipt, ReturnReceiptLine, WmsReturn
from orderflow.canonical.saga import order_key_from_reference
from orderflow.settings import WmsSettings

SYSTEM = "wms"

# How many throttles one call may sit out before it hands the wait to Temporal.
MAX_THROTTLE_WAITS = 3
# ShipBob's largest page size for orders and inventory.
PAGE_SIZE = 250

ORDER_STATUSES: dict[str, FulfillmentStatus] = {
    "Processing": FulfillmentStatus.PROCESSING,
    "Exception": FulfillmentStatus.EXCEPTION,
    "PartiallyFulfilled": FulfillmentStatus.PARTIALLY_FULFILLED,
    "Fulfilled": FulfillmentStatus.FULFILLED,
    "Cancelled": FulfillmentStatus.CANCELLED,
    # An order held for review has not reached the floor yet.
    "ImportReview": FulfillmentStatus.ON_HOLD,
}
LABELLED_SHIPMENT_STATUSES = frozenset({"LabeledCreated", "Completed"})
# The title of the reservation extension's answer when stock is short (nothing was reserved).
INSUFFICIENT_STOCK = "Insufficient stock."
# A location's address for a label's ship-from: where undeliverable parcels come back to first.
SHIP_FROM_SERVICES = ("Returns", "Receiving")
B2B_CHANNELS = frozenset({"b2b", "edi", "wholesale"})
# Shipment statuses ShipBob can still cancel or cut: nothing picked, packed or labelled yet.
CANCELLABLE_SHIPMENT_STATUSES = frozenset({"None", "Processing", "Exception", "OnHold", "ImportReview"})
# The topic whose body is a return the warehouse has inspected and dispositioned: a receipt.
RETURN_RECEIPT_TOPIC = "return.completed"
# What orderflow asks the warehouse to do with returned units: put back what can be sold. The
# warehouse decides per unit and reports what it did; a damaged unit is quarantined or disposed.
RETURN_REQUESTED_ACTION = "Restock"
SELLABLE_ACTIONS = frozenset({"Restock"})


class WmsClient:
    """ShipBob as orderflow's warehouse: fulfillment orders, cancellations, stock and shipments."""

    def __init__(self, http: httpx.AsyncClient, settings: WmsSettings) -> None:
        self._http = http
        self._settings = settings

    # ------------------------------------------------------------------ operations

    async def create_order(self, request: FulfillmentOrderRequest, *, label: Label | None = None) -> FulfillmentOrder:
        """Release a fulfillment order to the warehouse; safe to repeat for the same `reference`.

        A live reservation under the same reference is consumed by the order. With a `label`, the
        warehouse ships the order's first parcel under that label's tracking.
        """
        try:
            response = await self._call("POST", "order", json=order_payload(request, label=label))
        except ValidationRejectedError as exc:
            # ShipBob refuses a second order with the same reference_id: that order is ours.
            existing = await self.find_order_by_reference(request.reference) if exc.status_code == 422 else None
            if existing is None:
                raise
            return existing
        except TransientError as exc:
            if isinstance(exc, RateLimitedError):
                raise
            # The create may have landed before the answer was lost; read back before Temporal retries.
            try:
                existing = await self.find_order_by_reference(request.reference)
            except TransientError:
                existing = None
            if existing is None:
                raise
            return existing
        return fulfillment_order_from_payload(response.json())

    async def get_order(self, wms_order_id: str) -> FulfillmentOrder:
        """The fulfillment order as the warehouse holds it now."""
        response = await self._call("GET", f"order/{wms_order_id}")
        return fulfillment_order_from_payload(response.json())

    async def find_order_by_reference(self, reference: str) -> FulfillmentOrder | None:
        """The fulfillment order created under `reference`, or None if the warehouse has none."""
        response = await self._call("GET", "order", params={"ReferenceIds": reference, "Limit": 50})
        for payload in response.json() or []:
            if payload.get("reference_id") == reference:
                return fulfillment_order_from_payload(payload)
        return None

    async def cancel_order(self, wms_order_id: str) -> FulfillmentCancellation:
        """Cancel what has not shipped; an already cancelled order counts as cancelled, a labelled one is refused."""
        response = await self._call("POST", f"order/{wms_order_id}:cancel")
        return cancellation_from_payload(wms_order_id, response.json())

    async def get_stock(self, skus: list[str] | None = None, warehouse_id: str | None = None) -> list[StockLevel]:
        """Stock per SKU and fulfilment centre: on hand, committed, fulfillable and awaiting."""
        first: dict[str, Any] = {"PageSize": PAGE_SIZE}
        if warehouse_id is not None:
            first["LocationId"] = warehouse_id
        params: dict[str, Any] | None = first
        wanted = set(skus) if skus is not None else None
        levels: list[StockLevel] = []
        url: str | None = self._url("inventory-level/locations")
        while url:
            page = (await self._call("GET", url, params=params)).json()
            for item in page.get("items") or []:
                levels.extend(stock_levels_from_item(item, wanted, warehouse_id))
            # `next` is a complete link with the paging parameters in it (httpx drops a URL's
            # query when given even empty params, hence None).
            url, params = page.get("next"), None
        return levels

    async def list_shipments(self, wms_order_id: str) -> list[Shipment]:
        """The order's shipments that have left the warehouse (a label and tracking exist)."""
        response = await self._call("GET", f"order/{wms_order_id}/shipment")
        order = {"id": wms_order_id}
        return [
            shipment_from_payload(payload, order)
            for payload in response.json() or []
            if payload.get("status") in LABELLED_SHIPMENT_STATUSES and payload.get("tracking")
        ]

    async def reserve_stock(
        self, reference: str, lines: Sequence[AllocationLine], warehouse_id: str | None = None
    ) -> Allocation:
        """Hold stock for an order, all or nothing; safe to repeat for the same `reference`.

        Each line is placed in its `warehouse_id` (or `warehouse_id` here for every line; a line
        with neither lets the warehouse choose). Not enough stock is an outcome, not an error: the
        allocation comes back BACKORDERED and nothing is held.
        """
        items: list[dict[str, Any]] = []
        for line in lines:
            item: dict[str, Any] = {"sku": line.sku, "quantity": line.quantity_requested}
            location = warehouse_id or line.warehouse_id
            if location:
                item["location_id"] = int(location)
            items.append(item)
        try:
            response = await self._call(
                "POST", "inventory-reservation", json={"reference_id": reference, "items": items}
            )
        except ValidationRejectedError as exc:
            if exc.status_code == 422 and exc.vendor_code == INSUFFICIENT_STOCK:
                return backordered(reference, lines, warehouse_id)
            raise
        except TransientError as exc:
            if isinstance(exc, RateLimitedError):
                raise
            # The reservation may have landed before the answer was lost: read back before Temporal retries.
            try:
                existing = await self._find_reservation_payload(reference)
            except TransientError:
                existing = None
            if existing is None:
                raise
            return live_allocation(existing)
        return live_allocation(response.json())

    async def find_reservation(self, reference: str) -> Allocation | None:
        """The live reservation held under `reference` (not released, not taken by an order), if any."""
        payload = await self._find_reservation_payload(reference)
        if payload is None or payload.get("status") != "Active":
            return None
        return allocation_from_reservation(payload)

    async def release_reservation(self, reference: str) -> bool:
        """Give back the stock held under `reference`; True if a reservation was (or already is) released.

        No reservation, or one an order has consumed (the order owns that stock now), is False.
        """
        payload = await self._find_reservation_payload(reference)
        if payload is None or payload.get("status") == "Consumed":
            return False
        if payload.get("status") == "Active":
            payload = (await self._call("POST", f"inventory-reservation/{payload['id']}:release")).json()
        return payload.get("status") == "Released"

    async def _find_reservation_payload(self, reference: str) -> dict[str, Any] | None:
        response = await self._call("GET", "inventory-reservation", params={"ReferenceIds": reference, "Limit": 50})
        for payload in response.json().get("items") or []:
            if payload.get("reference_id") == reference:
                return dict(payload)
        return None

    # ------------------------------------------------------------------ partial cancellation

    async def cancel_order_lines(self, wms_order_id: str, quantities: Mapping[str, int]) -> FulfillmentOrder:
        """Cancel unshipped units of an order, per SKU, and keep the rest going.

        `quantities` is how many units of each SKU are cancelled on this order in all, counted from
        what was ordered, so a repeat (a retry after a lost answer) cuts nothing more. ShipBob can
        cut only shipments not yet picked, packed or labelled: units in one of those are cut (a
        shipment losing every unit is cancelled), units already on their way are left alone. The
        result's `lines` are what the warehouse still ships or has shipped, per SKU.
        """
        payload = (await self._call("GET", f"order/{wms_order_id}")).json()
        ordered: dict[str, int] = {}
        for product in payload.get("products") or []:
            sku = product.get("reference_id") or product.get("sku")
            if sku:
                ordered[sku] = ordered.get(sku, 0) + int(product.get("quantity") or 0)
        unknown = sorted(sku for sku, qty in quantities.items() if qty > 0 and sku not in ordered)
        if unknown:
            raise ValidationRejectedError(
                f"SKU(s) {', '.join(unknown)} are not on order {wms_order_id}", system=SYSTEM, vendor_code="UnknownSku"
            )
        shipments = [s for s in payload.get("shipments") or [] if s.get("status") != "Cancelled"]
        live = _units_by_sku(shipments)
        need = {
            sku: qty - (ordered[sku] - live.get(sku, 0))
            for sku, qty in quantities.items()
            if qty > 0 and qty - (ordered[sku] - live.get(sku, 0)) > 0
        }
        # The newest shipments give their units up first; each is cut with one call.
        for shipment in reversed(shipments):
            if not need:
                break
            if shipment.get("status") not in CANCELLABLE_SHIPMENT_STATUSES:
                continue
            await self._cut_shipment(shipment, need)
        after = (await self._call("GET", f"order/{wms_order_id}")).json()
        return _with_live_lines(fulfillment_order_from_payload(after), after)

    async def _cut_shipment(self, shipment: Mapping[str, Any], need: dict[str, int]) -> None:
        """Take units of `need` off one cancellable shipment; `need` is reduced by what was taken."""
        shipment_id = shipment["id"]
        sku_of = {
            int(item["id"]): str(product.get("reference_id") or product.get("sku"))
            for product in shipment.get("products") or []
            for item in product.get("inventory_items") or []
        }
        items = (await self._call("GET", f"shipment/{shipment_id}:getLineItems")).json() or []
        kept: list[dict[str, Any]] = []
        cut = False
        for item in items:
            sku = sku_of.get(int(item["inventory_id"]))
            quantity = int(item.get("quantity") or 0)
            take = min(quantity, need.get(sku or "", 0))
            if take and sku:
                cut = True
                need[sku] -= take
                if not need[sku]:
                    del need[sku]
            if quantity - take > 0:
                entry = {k: item[k] for k in ("id", "inventory_id", "fulfillment_center_id") if k in item}
                kept.append({**entry, "quantity": quantity - take})
        if not cut:
            return
        if kept:
            await self._call("POST", f"shipment/{shipment_id}:updateLineItems", json={"items": kept})
        else:
            await self._call("POST", f"shipment/{shipment_id}:cancel")

    # ------------------------------------------------------------------ returns

    async def create_return(
        self,
        reference: str,
        *,
        lines: Sequence[ReturnLine],
        original_wms_order_id: str | None = None,
        tracking_number: str | None = None,
        warehouse_id: str | None = None,
    ) -> WmsReturn:
        """Tell the warehouse a return is coming (a ShipBob return order); safe to repeat for `reference`.

        The return goes to `warehouse_id`, else to the centre that shipped the original order's
        first parcel holding these SKUs. The warehouse is asked to restock what it can sell.
        """
        existing = await self.find_return(reference)
        if existing is not None:
            return existing
        wanted: dict[str, int] = {}
        for line in lines:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        shipment: Mapping[str, Any] | None = None
        inventory_ids: dict[str, int] = {}
        if original_wms_order_id is not None:
            shipped = (await self._call("GET", f"order/{original_wms_order_id}/shipment")).json() or []
            for candidate in shipped:
                skus = _inventory_ids(candidate)
                inventory_ids = {**skus, **inventory_ids}
                if (
                    shipment is None
                    and candidate.get("status") in LABELLED_SHIPMENT_STATUSES
                    and set(skus) & set(wanted)
                ):
                    shipment = candidate
        missing = sorted(set(wanted) - set(inventory_ids))
        if missing:
            inventory_ids.update(await self._inventory_ids(missing))
        missing = sorted(set(wanted) - set(inventory_ids))
        if missing:
            raise ValidationRejectedError(
                f"SKU(s) {', '.join(missing)} are not ShipBob inventory", system=SYSTEM, vendor_code="UnknownSku"
            )
        centre = warehouse_id or (str((shipment or {}).get("location", {}).get("id") or "") or None)
        if centre is None:
            raise ValidationRejectedError(
                f"return {reference} needs a warehouse: give warehouse_id or an order that has shipped",
                system=SYSTEM, vendor_code="NoWarehouse",
            )  # fmt: skip
        body = return_payload(
            reference,
            {inventory_ids[sku]: qty for sku, qty in wanted.items()},
            warehouse_id=centre,
            original_shipment_id=str(shipment["id"]) if shipment is not None else None,
            tracking_number=tracking_number,
        )
        try:
            response = await self._call("POST", "return", json=body)
        except ValidationRejectedError as exc:
            # A second return with the same reference_id is refused: that return is ours.
            found = await self.find_return(reference) if exc.status_code == 422 else None
            if found is None:
                raise
            return found
        except TransientError as exc:
            if isinstance(exc, RateLimitedError):
                raise
            try:
                found = await self.find_return(reference)
            except TransientError:
                found = None
            if found is None:
                raise
            return found
        return wms_return_from_payload(response.json())

    async def _inventory_ids(self, skus: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for sku in skus:
            page = (await self._call("GET", "inventory-level/locations", params={"SearchBy": sku})).json()
            for item in page.get("items") or []:
                if item.get("sku") == sku:
                    found[sku] = int(item["inventory_id"])
        return found

    async def find_return(self, reference: str) -> WmsReturn | None:
        """The return created under `reference`, or None if the warehouse has none."""
        response = await self._call("GET", "return", params={"ReferenceIds": reference, "Limit": 50})
        for payload in response.json().get("items") or []:
            if payload.get("reference_id") == reference:
                return wms_return_from_payload(payload)
        return None

    async def get_return(self, wms_return_id: str) -> WmsReturn:
        """A return as the warehouse holds it now."""
        return wms_return_from_payload((await self._call("GET", f"return/{wms_return_id}")).json())

    async def cancel_return(self, wms_return_id: str) -> WmsReturn:
        """Cancel a return the warehouse has not received; cancelled already is fine, arrived is a conflict."""
        current = await self.get_return(wms_return_id)
        if current.status == "Cancelled":
            return current
        if current.status != "Awaiting Arrival":
            raise ConflictError(
                f"return {wms_return_id} is {current.status}; the warehouse has it, so it can no longer be cancelled",
                system=SYSTEM, vendor_code=current.status,
            )  # fmt: skip
        return wms_return_from_payload((await self._call("POST", f"return/{wms_return_id}:cancel")).json())

    async def restock_return(self, wms_return_id: str, receipt: ReturnReceipt) -> list[StockLevel]:
        """Make sure a receipt's sellable units are back in fulfillable stock; their stock levels after.

        ShipBob restocks a sellable unit itself when it dispositions the return, so this step checks
        that the return record shows those units restocked (a receipt that claims more is a conflict)
        and reads the stock back. Damaged units are never restocked. Safe to repeat.
        """
        payload = (await self._call("GET", f"return/{wms_return_id}")).json()
        restocked = _processed(payload, SELLABLE_ACTIONS)
        short = {sku: qty for sku, qty in receipt.sellable.items() if restocked.get(sku, 0) < qty}
        if short:
            raise ConflictError(
                f"return {wms_return_id} shows fewer units restocked than receipt {receipt.receipt_id} says: "
                + ", ".join(f"{sku} ({restocked.get(sku, 0)} of {qty})" for sku, qty in sorted(short.items())),
                system=SYSTEM, vendor_code="NotRestocked",
            )  # fmt: skip
        if not receipt.sellable:
            return []
        warehouse = str((payload.get("fulfillment_center") or {}).get("id") or "") or None
        return await self.get_stock(sorted(receipt.sellable), warehouse)

    async def get_location(self, warehouse_id: str) -> Address:
        """A fulfilment centre's address, to ship from."""
        response = await self._call("GET", "location", params={"IncludeInactive": "true"})
        for location in response.json() or []:
            if str(location.get("id")) == str(warehouse_id):
                return address_from_location(location)
        raise NotFoundError(f"location {warehouse_id} is not a ShipBob location", system=SYSTEM, status_code=404)

    async def subscribe_webhooks(self, url: str, topics: list[str]) -> SecretStr:
        """Subscribe `url` to warehouse events; returns the `whsec_` secret their signatures use."""
        response = await self._call("POST", "webhook", json={"topics": topics, "url": url})
        return SecretStr(response.json()["secret"])

    # ------------------------------------------------------------------ HTTP

    def _url(self, path: str) -> str:
        return f"{self._settings.base_url.rstrip('/')}/{self._settings.api_version}/{path}"

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        """One API call with auth and channel headers, throttles waited out when short."""
        url = path if path.startswith(("http://", "https://")) else self._url(path)
        headers = {
            "Authorization": f"Bearer {self._settings.token.get_secret_value()}",
            "shipbob_channel_id": str(self._settings.channel_id),
            "Accept": "application/json",
        }
        for attempt in range(MAX_THROTTLE_WAITS + 1):
            try:
                response = await self._http.request(
                    method, url, json=json, params=params, headers=headers, timeout=self._settings.timeout_seconds
                )
            except httpx.TransportError as exc:
                raise transport_error(exc, system=SYSTEM) from exc
            if response.status_code == 429:
                retry_after = retry_after_seconds(response.headers, "x-retry-after", "retry-after")
                wait = 1.0 if retry_after is None else retry_after
                if wait <= self._settings.max_throttle_wait_seconds and attempt < MAX_THROTTLE_WAITS:
                    await asyncio.sleep(wait)
                    continue
                raise error_from_response(response, retry_after=wait)
            if response.status_code >= 400:
                raise error_from_response(response)
            return response
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


# ---------------------------------------------------------------------- errors


def error_from_response(response: httpx.Response, *, retry_after: float | None = None) -> AdapterError:
    """A ShipBob error as orderflow's error class, keeping ShipBob's code, message and field errors."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    message = response.reason_phrase or f"HTTP {response.status_code}"
    vendor_code: str | None = None
    details: Any = body
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, dict):
            details = {str(k): [str(m) for m in v] if isinstance(v, list) else [str(v)] for k, v in errors.items()}
        elif body and all(isinstance(v, list) for v in body.values()):
            # The spec also documents a bare `{field: [messages]}` map for 400/422.
            details = {str(k): [str(m) for m in v] for k, v in body.items()}
        detail = body.get("detail") or body.get("message")
        title = body.get("title")
        if isinstance(detail, str) and detail:
            message = detail
        elif isinstance(title, str) and title:
            message = title
        if isinstance(details, dict) and details is not body:
            fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in details.items())
            message = f"{message} ({fields})" if fields else message
        code = body.get("title") if isinstance(body.get("title"), str) else body.get("statusCode")
        vendor_code = str(code) if code is not None else None
    return classify_status(
        response.status_code,
        message,
        system=SYSTEM,
        vendor_code=vendor_code,
        details=details,
        retry_after=retry_after,
    )


# ---------------------------------------------------------------------- mapping: canonical -> ShipBob


def order_payload(request: FulfillmentOrderRequest, *, label: Label | None = None) -> dict[str, Any]:
    """The ShipBob create-order body for a fulfillment order request, with the label we bought as tags."""
    address = request.ship_to
    body: dict[str, Any] = {
        "reference_id": request.reference,
        "order_number": request.order_number,
        "type": "B2B" if (request.channel or "").lower() in B2B_CHANNELS else "DTC",
        "shipping_method": request.ship_method,
        "recipient": {
            "name": address.name,
            "email": address.email,
            "phone_number": address.phone,
            "address": {
                "address1": address.line1,
                "address2": address.line2,
                "company_name": address.company,
                "city": address.city,
                "state": address.region,
                "zip_code": address.postal_code,
                "country": address.country,
            },
        },
        "products": [
            {
                "reference_id": line.sku,
                "sku": line.sku,
                # ShipBob creates an unknown product from its name, so always send one.
                "name": line.name or line.sku,
                "quantity": line.quantity,
                # JSON numbers on the wire; the canonical amount stays a Decimal.
                "unit_price": float(line.unit_price.amount) if line.unit_price else None,
            }
            for line in request.lines
        ],
    }
    if request.warehouse_id is not None:
        body["location_id"] = int(request.warehouse_id)
    if request.placed_at is not None:
        body["purchase_date"] = request.placed_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    tags: list[dict[str, str]] = []
    if request.channel:
        tags.append({"name": "channel", "value": request.channel})
    if label is not None:
        tags.extend(label_tags(label))
    if tags:
        body["tags"] = tags
    return body


def return_payload(
    reference: str,
    inventory: Mapping[int, int],
    *,
    warehouse_id: str,
    original_shipment_id: str | None = None,
    tracking_number: str | None = None,
) -> dict[str, Any]:
    """The ShipBob create-return body: units per inventory id, asked to be restocked where sellable."""
    body: dict[str, Any] = {
        "reference_id": reference,
        "fulfillment_center": {"id": int(warehouse_id)},
        "inventory": [
            {"id": inventory_id, "quantity": quantity, "requested_action": RETURN_REQUESTED_ACTION}
            for inventory_id, quantity in inventory.items()
        ],
    }
    if original_shipment_id is not None:
        body["original_shipment_id"] = int(original_shipment_id)
    if tracking_number:
        body["tracking_number"] = tracking_number
    return body


def label_tags(label: Label) -> list[dict[str, str]]:
    """A bought label as order tags: ShipBob's create-order model has no field for a merchant's label."""
    values = {
        "label_carrier": label.rate.carrier,
        "label_service": label.rate.service,
        "label_tracking_number": label.tracking_number,
        "label_url": label.label_url,
        "label_tracking_url": label.tracking_url,
        "label_carrier_shipment_id": label.carrier_shipment_id,
    }
    return [{"name": name, "value": value} for name, value in values.items() if value]


# ---------------------------------------------------------------------- mapping: ShipBob -> canonical


def fulfillment_order_from_payload(payload: Mapping[str, Any]) -> FulfillmentOrder:
    """A ShipBob order as a canonical fulfillment order."""
    shipments = [s for s in payload.get("shipments") or [] if isinstance(s, Mapping)]
    live = [s for s in shipments if s.get("status") != "Cancelled"]
    status = ORDER_STATUSES.get(str(payload.get("status")), FulfillmentStatus.PROCESSING)
    if status is FulfillmentStatus.PROCESSING and any(s.get("status") == "OnHold" for s in live):
        status = FulfillmentStatus.ON_HOLD
    lines: list[FulfillmentLine] = []
    for product in payload.get("products") or []:
        sku = product.get("reference_id") or product.get("sku")
        if sku and int(product.get("quantity") or 0) > 0:
            lines.append(FulfillmentLine(sku=sku, quantity=int(product["quantity"])))
    warehouses = sorted({str(s["location"]["id"]) for s in live if (s.get("location") or {}).get("id") is not None})
    return FulfillmentOrder(
        wms_order_id=str(payload["id"]),
        reference=str(payload.get("reference_id") or ""),
        status=status,
        lines=lines,
        warehouse_ids=warehouses,
        shipment_ids=[str(s["id"]) for s in shipments],
        exception_reason=exception_reason(shipments),
    )


def _units_by_sku(shipments: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    units: dict[str, int] = {}
    for shipment in shipments:
        for product in shipment.get("products") or []:
            sku = product.get("reference_id") or product.get("sku")
            quantity = sum(int(i.get("quantity") or 0) for i in product.get("inventory_items") or [])
            if sku and quantity:
                units[sku] = units.get(sku, 0) + quantity
    return units


def _with_live_lines(order: FulfillmentOrder, payload: Mapping[str, Any]) -> FulfillmentOrder:
    """The order with `lines` counted from its live shipments: what still ships or has shipped."""
    live = _units_by_sku([s for s in payload.get("shipments") or [] if s.get("status") != "Cancelled"])
    return order.model_copy(update={"lines": [FulfillmentLine(sku=sku, quantity=qty) for sku, qty in live.items()]})


def _inventory_ids(shipment: Mapping[str, Any]) -> dict[str, int]:
    """SKU -> inventory id, from a shipment's products."""
    found: dict[str, int] = {}
    for product in shipment.get("products") or []:
        sku = product.get("reference_id") or product.get("sku")
        for item in product.get("inventory_items") or []:
            if sku and item.get("id") is not None:
                found[str(sku)] = int(item["id"])
    return found


def _processed(payload: Mapping[str, Any], actions: frozenset[str] | None = None) -> dict[str, int]:
    """Units per SKU the warehouse dispositioned on a return (with one of `actions`, or any)."""
    units: dict[str, int] = {}
    for item in payload.get("inventory") or []:
        sku = item.get("sku")
        for taken in item.get("action_taken") or []:
            if sku and (actions is None or taken.get("action") in actions):
                units[sku] = units.get(sku, 0) + int(taken.get("quantity_processed") or 0)
    return units


def wms_return_from_payload(payload: Mapping[str, Any]) -> WmsReturn:
    """A ShipBob return as the canonical warehouse return: expected lines, status, tracking."""
    lines = [
        ReturnLine(sku=str(item["sku"]), quantity=int(item["quantity"]))
        for item in payload.get("inventory") or []
        if item.get("sku") and int(item.get("quantity") or 0) > 0
    ]
    centre = (payload.get("fulfillment_center") or {}).get("id")
    return WmsReturn(
        wms_return_id=str(payload["id"]),
        reference=str(payload.get("reference_id") or payload["id"]),
        status=str(payload.get("status") or "Awaiting Arrival"),
        tracking_number=payload.get("tracking_number") or None,
        lines=lines,
        warehouse_id=str(centre) if centre is not None else None,
    )


def return_receipt_from_webhook(payload: Mapping[str, Any]) -> ReturnReceipt:
    """A `return.completed` body as the receipt it reports: per SKU, units found sellable and damaged.

    Units restocked are sellable; units quarantined or disposed are damaged. ShipBob completes a
    return once, so the receipt id is the return's id with its completion time; a redelivery of
    the same event gives the same id. Raises ValueError (naming the field) for a body that is not
    a completed return.
    """
    return_id = payload.get("id")
    if return_id is None or str(return_id).strip() == "":
        raise ValueError("return webhook body has no id (field: id)")
    if payload.get("status") != "Completed":
        raise ValueError(f"return {return_id} is {payload.get('status')!r}, not Completed (field: status)")
    completed = payload.get("completed_date")
    if not completed:
        raise ValueError(f"return {return_id} has no completed_date (field: completed_date)")
    lines: list[ReturnReceiptLine] = []
    for index, item in enumerate(payload.get("inventory") or []):
        sku = item.get("sku")
        if not sku:
            raise ValueError(f"return {return_id} item {index} has no SKU (field: inventory[{index}].sku)")
        for taken in item.get("action_taken") or []:
            quantity = int(taken.get("quantity_processed") or 0)
            if quantity <= 0:
                continue
            condition = ItemCondition.SELLABLE if taken.get("action") in SELLABLE_ACTIONS else ItemCondition.DAMAGED
            lines.append(ReturnReceiptLine(sku=sku, quantity=quantity, condition=condition))
    if not lines:
        raise ValueError(f"return {return_id} was completed with nothing received (field: inventory)")
    received_at = _parse_time(completed)
    return ReturnReceipt(
        wms_return_id=str(return_id),
        reference=str(payload.get("reference_id") or return_id),
        receipt_id=f"shipbob-return-{return_id}-{int(received_at.timestamp())}",
        lines=_merge_receipt_lines(lines),
        received_at=received_at,
    )


def _merge_receipt_lines(lines: list[ReturnReceiptLine]) -> list[ReturnReceiptLine]:
    merged: dict[tuple[str, ItemCondition], int] = {}
    for line in lines:
        merged[(line.sku, line.condition)] = merged.get((line.sku, line.condition), 0) + line.quantity
    return [ReturnReceiptLine(sku=sku, quantity=qty, condition=cond) for (sku, cond), qty in merged.items()]


def allocation_from_reservation(payload: Mapping[str, Any]) -> Allocation:
    """A reservation as a canonical allocation: every reserved line in full."""
    reference = str(payload.get("reference_id") or "")
    lines = [
        AllocationLine(
            sku=str(item["sku"]),
            warehouse_id=str(item["location_id"]),
            quantity_requested=int(item["quantity"]),
            quantity_allocated=int(item["quantity"]),
        )
        for item in payload.get("items") or []
        if int(item.get("quantity") or 0) > 0
    ]
    return Allocation(
        order_key=order_key_from_reference(reference) or reference, lines=lines, status=AllocationStatus.ALLOCATED
    )


def live_allocation(payload: Mapping[str, Any]) -> Allocation:
    """The allocation of a reservation that must still be live: a released or consumed one is a conflict."""
    if payload.get("status") != "Active":
        raise ConflictError(
            f"reservation {payload.get('id')} for {payload.get('reference_id')} is {payload.get('status')}; "
            "a new reservation needs a new reference",
            system=SYSTEM,
            vendor_code=str(payload.get("status")),
        )
    return allocation_from_reservation(payload)


def backordered(reference: str, lines: Sequence[AllocationLine], warehouse_id: str | None = None) -> Allocation:
    """The allocation when the warehouse could not hold every line: nothing reserved."""
    return Allocation(
        order_key=order_key_from_reference(reference) or reference,
        lines=[
            line.model_copy(update={"quantity_allocated": 0, "warehouse_id": warehouse_id or line.warehouse_id})
            for line in lines
        ],
        status=AllocationStatus.BACKORDERED,
    )


def address_from_location(location: Mapping[str, Any]) -> Address:
    """A `Locations.LocationViewModel` as a ship-from address (its returns address, else receiving)."""
    services = {s.get("service_type"): s for s in location.get("services") or [] if isinstance(s, Mapping)}
    address: Mapping[str, Any] = {}
    for kind in SHIP_FROM_SERVICES:
        candidate = (services.get(kind) or {}).get("address") or {}
        if candidate.get("address1") and candidate.get("city") and candidate.get("country"):
            address = candidate
            break
    if not address:
        raise ValidationRejectedError(
            f"location {location.get('id')} has no address to ship from", system=SYSTEM, vendor_code="NoAddress"
        )
    return Address(
        name=str(address.get("name") or location.get("name") or f"ShipBob {location.get('id')}"),
        line1=str(address["address1"]),
        line2=address.get("address2") or None,
        city=str(address["city"]),
        region=address.get("state") or None,
        postal_code=address.get("zip_code") or None,
        country=str(address["country"]),
        phone=address.get("phone_number") or None,
        email=address.get("email") or None,
    )


def exception_reason(shipments: list[Mapping[str, Any]]) -> str | None:
    """Why shipments sit in Exception or on hold, in ShipBob's words."""
    reasons: list[str] = []
    for shipment in shipments:
        if shipment.get("status") not in ("Exception", "OnHold"):
            continue
        for detail in shipment.get("status_details") or []:
            text = detail.get("description") or detail.get("name")
            if text:
                reasons.append(str(text))
        if not shipment.get("status_details"):
            reasons.append(f"shipment {shipment.get('id')} is {shipment.get('status')}")
    return "; ".join(reasons) or None


def cancellation_from_payload(wms_order_id: str, payload: Mapping[str, Any]) -> FulfillmentCancellation:
    """ShipBob's cancel result as a canonical cancellation: Success, PartialSuccess or Failure."""
    order = payload.get("order") or {}
    results = payload.get("canceled_shipment_results") or []
    refusals = [str(r.get("reason")) for r in results if not r.get("is_success") and r.get("reason")]
    status = payload.get("status")
    if status == "Success" or order.get("status") == "Cancelled":
        # Cancelling twice is a Failure on the second call, but the order is cancelled: that is success.
        return FulfillmentCancellation(wms_order_id=wms_order_id, outcome=CancellationOutcome.CANCELLED)
    outcome = CancellationOutcome.PARTIAL if status == "PartialSuccess" else CancellationOutcome.REFUSED
    return FulfillmentCancellation(
        wms_order_id=wms_order_id, outcome=outcome, reason="; ".join(refusals) or f"ShipBob answered {status}"
    )


def stock_levels_from_item(
    item: Mapping[str, Any], skus: set[str] | None = None, warehouse_id: str | None = None
) -> list[StockLevel]:
    """One inventory item's quantities per fulfilment centre as canonical stock levels."""
    sku = item.get("sku")
    if not sku or (skus is not None and sku not in skus):
        return []
    return [
        StockLevel(
            sku=sku,
            warehouse_id=str(location["location_id"]),
            on_hand=max(0, int(location.get("on_hand_quantity") or 0)),
            committed=max(0, int(location.get("committed_quantity") or 0)),
            fulfillable=max(0, int(location.get("fulfillable_quantity") or 0)),
            awaiting=max(0, int(location.get("awaiting_quantity") or 0)),
        )
        for location in item.get("locations") or []
        if warehouse_id is None or str(location.get("location_id")) == str(warehouse_id)
    ]


def shipment_from_payload(shipment: Mapping[str, Any], order: Mapping[str, Any]) -> Shipment:
    """A labelled ShipBob shipment as a canonical shipment, its lines counted from inventory items."""
    tracking = shipment.get("tracking") or {}
    number = tracking.get("tracking_number") or tracking.get("tracking_id")
    if not tracking.get("carrier") or not number:
        raise ValueError(f"shipment {shipment.get('id')} has no tracking yet")
    quantities: dict[str, int] = {}
    for product in shipment.get("products") or []:
        sku = product.get("reference_id") or product.get("sku")
        quantity = sum(int(i.get("quantity") or 0) for i in product.get("inventory_items") or [])
        if sku and quantity > 0:
            quantities[sku] = quantities.get(sku, 0) + quantity
    shipped_at = tracking.get("shipping_date") or shipment.get("actual_fulfillment_date")
    return Shipment(
        shipment_id=str(shipment["id"]),
        wms_order_id=str(shipment.get("order_id") or order.get("id") or "") or None,
        reference=shipment.get("reference_id") or order.get("reference_id"),
        warehouse_id=str((shipment.get("location") or {}).get("id")) if shipment.get("location") else None,
        tracking=Tracking(
            carrier=tracking["carrier"],
            number=number,
            url=tracking.get("tracking_url"),
            service=tracking.get("carrier_service"),
        ),
        lines=[ShipmentLine(sku=sku, quantity=qty) for sku, qty in quantities.items()],
        shipped_at=_parse_time(shipped_at),
    )


def shipments_from_webhook(payload: Mapping[str, Any]) -> list[Shipment]:
    """Every labelled shipment an `order.shipped` (or delivered) body carries."""
    return [
        shipment_from_payload(s, payload)
        for s in payload.get("shipments") or []
        if (s.get("tracking") or {}).get("carrier")
    ]


def shipment_from_webhook(payload: Mapping[str, Any]) -> Shipment:
    """The shipment an `order.shipped` body is about: one parcel, possibly part of a split order."""
    shipments = shipments_from_webhook(payload)
    if not shipments:
        raise ValueError(f"order.shipped for order {payload.get('id')} carries no labelled shipment")
    return shipments[0]


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise ValueError("shipment has no shipping date")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ---------------------------------------------------------------------- webhooks


def verify_webhook(
    raw_body: bytes,
    headers: Mapping[str, str],
    secret: str | SecretStr,
    *,
    now: datetime | float,
    tolerance_seconds: float = 300,
) -> bool:
    """Whether a ShipBob delivery is authentic and fresh (Standard Webhooks: HMAC over `id.timestamp.body`)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not webhook_id or not timestamp or not signatures:
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    current = now.timestamp() if isinstance(now, datetime) else float(now)
    # Too old is a replay; too far ahead is a forged or badly skewed clock.
    if abs(current - sent_at) > tolerance_seconds:
        return False
    key_text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    try:
        key = base64.b64decode(key_text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return False
    signed = f"{webhook_id}.{timestamp}.".encode() + raw_body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    matched = False
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        # Compare every entry, so the time taken does not tell which one matched.
        if version == "v1" and hmac.compare_digest(expected, value.encode()):
            matched = True
    return matched


__all__ = [
    "WmsClient",
    "address_from_location",
    "allocation_from_reservation",
    "backordered",
    "cancellation_from_payload",
    "error_from_response",
    "fulfillment_order_from_payload",
    "label_tags",
    "live_allocation",
    "order_payload",
    "return_payload",
    "return_receipt_from_webhook",
    "shipment_from_payload",
    "shipment_from_webhook",
    "shipments_from_webhook",
    "stock_levels_from_item",
    "verify_webhook",
    "wms_return_from_payload",
]

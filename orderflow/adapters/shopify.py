"""Shopify adapter: the Admin GraphQL API, its cost-based throttle, and the webhook mapping.

The client speaks GraphQL only (REST is legacy since 2024-10). It owns:

- authentication: a static Admin API token, or a client-credentials token it fetches and caches
  until shortly before it expires;
- the throttle: every response carries `extensions.cost`; a `THROTTLED` answer (HTTP 200 or 429)
  is waited out when the bucket refills within `max_throttle_wait_seconds`, otherwise it goes back
  to Temporal as `RateLimitedError(retry_after=...)`;
- idempotency: fulfillments are looked up by tracking number before one is created, refunds are
  looked up by a key written into their note and, from API 2026-01, sent with `@idempotent(key:)`;
  a return's state is read before it is approved, labelled, closed or cancelled;
- the mapping between Shopify orders (REST webhook bodies and GraphQL nodes) and canonical models.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from pydantic import ValidationError

from orderflow.adapters.errors import (
    AdapterError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
    ValidationRejectedError,
    classify_status,
    retry_after_seconds,
    transport_error,
)
from orderflow.canonical import (
    Address,
    Channel,
    ChannelRefundRef,
    Customer,
    Discount,
    FinancialStatus,
    Label,
    Money,
    Order,
    OrderLine,
    Refund,
    RefundLine,
    Return,
    ReturnLine,
    Shipment,
    ShippingCharge,
    TaxLine,
    order_key,
)
from orderflow.canonical.base import CanonicalModel
from orderflow.settings import ShopifySettings

SYSTEM = "shopify"
log = logging.getLogger("orderflow.adapters.shopify")

# A throttle is retried inside the call at most this many times before Temporal takes over.
MAX_THROTTLE_ATTEMPTS = 4
# Refresh a client-credentials token this long before Shopify says it expires.
TOKEN_REFRESH_MARGIN_SECONDS = 300.0
CANCEL_REASONS = frozenset({"CUSTOMER", "DECLINED", "FRAUD", "INVENTORY", "STAFF", "OTHER"})
# Top-level error codes that mean "try again later" rather than "this request is wrong".
TRANSIENT_CODES = frozenset({"INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE", "TIMEOUT", "SHOP_INACTIVE_TEMPORARILY"})
# userError codes (or wording, where Shopify sends no code) that mean the record's state forbids it.
CONFLICT_CODES = frozenset({"INVALID", "COMPARE_QUANTITY_STALE", "TAKEN"})
_CONFLICT_WORDING = re.compile(r"already|unfulfillable status|cannot (?:cancel|fulfill)|exceeds|greater than", re.I)


# --- Results Shopify returns that canonical/ has no model for ------------------------------------


class ShopifyCancelJob(CanonicalModel):
    """An order cancellation on Shopify: an asynchronous job, or nothing to do if already cancelled."""

    job_id: str | None = None
    done: bool
    already_cancelled: bool = False


class ShopifyOrderCancellation(CanonicalModel):
    """Shopify's word that an order was cancelled (an `orders/cancelled` webhook)."""

    channel_order_id: str
    order_key: str
    cancelled_at: datetime
    reason: str | None = None
    financial_status: FinancialStatus


class ShopifyFulfillmentRef(CanonicalModel):
    """A fulfillment recorded on a Shopify order; `created` is False when an existing one was found."""

    fulfillment_id: str
    status: str
    tracking_number: str | None = None
    created: bool = True


# --- GraphQL documents ----------------------------------------------------------------------------

_MONEY = "shopMoney { amount currencyCode }"
_ADDRESS = "name firstName lastName company address1 address2 city provinceCode zip countryCodeV2 phone"
_TAX = f"title rate priceSet {{ {_MONEY} }}"
_DISCOUNT = (
    f"allocatedAmountSet {{ {_MONEY} }} discountApplication {{ index "
    "... on DiscountCodeApplication { code } ... on ManualDiscountApplication { title } }"
)

ORDER_QUERY = f"""query OrderForSaga($id: ID!) {{
  order(id: $id) {{
    id legacyResourceId name email note createdAt cancelledAt currencyCode displayFinancialStatus
    customer {{ id legacyResourceId displayName email }}
    shippingAddress {{ {_ADDRESS} }}
    billingAddress {{ {_ADDRESS} }}
    totalPriceSet {{ {_MONEY} }}
    taxLines {{ {_TAX} }}
    lineItems(first: 50) {{
      pageInfo {{ hasNextPage }}
      nodes {{
        id sku name quantity requiresShipping
        originalUnitPriceSet {{ {_MONEY} }}
        discountAllocations {{ {_DISCOUNT} }}
        taxLines {{ {_TAX} }}
      }}
    }}
    shippingLines(first: 5) {{
      nodes {{ title code originalPriceSet {{ {_MONEY} }} discountAllocations {{ {_DISCOUNT} }} taxLines {{ {_TAX} }} }}
    }}
    fulfillmentOrders(first: 5) {{ nodes {{ assignedLocation {{ location {{ id }} }} }} }}
  }}
}}"""

ORDER_STATE_QUERY = "query OrderState($id: ID!) { order(id: $id) { id cancelledAt } }"

JOB_QUERY = "query CancelJob($id: ID!) { job(id: $id) { id done } }"

ORDER_CANCEL_MUTATION = """mutation OrderCancel($orderId: ID!, $reason: OrderCancelReason!, $restock: Boolean!,
    $notifyCustomer: Boolean, $refundMethod: OrderCancelRefundMethodInput, $staffNote: String) {
  orderCancel(orderId: $orderId, reason: $reason, restock: $restock, notifyCustomer: $notifyCustomer,
              refundMethod: $refundMethod, staffNote: $staffNote) {
    job { id done }
    orderCancelUserErrors { field message code }
  }
}"""

FULFILLMENT_CONTEXT_QUERY = """query FulfillmentContext($id: ID!) {
  order(id: $id) {
    id cancelledAt
    fulfillments(first: 20) {
      id status
      trackingInfo(first: 2) { company number url }
      fulfillmentLineItems(first: 10) { nodes { quantity lineItem { sku } } }
    }
    fulfillmentOrders(first: 5) {
      nodes {
        id status
        assignedLocation { location { id } }
        lineItems(first: 20) { nodes { id remainingQuantity sku } }
      }
    }
  }
}"""

FULFILLMENT_CREATE_MUTATION = """mutation FulfillmentCreate($fulfillment: FulfillmentInput!) {
  fulfillmentCreate(fulfillment: $fulfillment) {
    fulfillment { id status trackingInfo(first: 1) { company number url } }
    userErrors { field message }
  }
}"""

REFUND_CONTEXT_QUERY = f"""query RefundContext($id: ID!) {{
  order(id: $id) {{
    id currencyCode
    lineItems(first: 50) {{ nodes {{ id sku refundableQuantity }} }}
    fulfillmentOrders(first: 5) {{ nodes {{ assignedLocation {{ location {{ id }} }} }} }}
    transactions(first: 20) {{ id kind status gateway amountSet {{ {_MONEY} }} }}
    refunds(first: 50) {{ id legacyResourceId note totalRefundedSet {{ {_MONEY} }} }}
  }}
}}"""

_REFUND_SELECTION = f"""refund {{ id legacyResourceId note totalRefundedSet {{ {_MONEY} }} }}
    userErrors {{ field message }}"""
REFUND_CREATE_MUTATION = f"""mutation RefundCreate($input: RefundInput!) {{
  refundCreate(input: $input) {{
    {_REFUND_SELECTION}
  }}
}}"""
REFUND_CREATE_IDEMPOTENT_MUTATION = f"""mutation RefundCreate($input: RefundInput!, $key: String!) {{
  refundCreate(input: $input) @idempotent(key: $key) {{
    {_REFUND_SELECTION}
  }}
}}"""

_RETURN_FIELDS = """id name status createdAt closedAt totalQuantity order { id legacyResourceId }
    returnLineItems(first: 50) {
      nodes { id quantity customerNote ... on ReturnLineItem {
        returnReason fulfillmentLineItem { id lineItem { id sku } } } }
    }
    reverseFulfillmentOrders(first: 5) {
      nodes { id status
        lineItems(first: 50) { nodes { id totalQuantity } }
        reverseDeliveries(first: 10) { nodes { id deliverable {
          ... on ReverseDeliveryShippingDeliverable { tracking { number url } label { publicFileUrl } } } } }
      }
    }"""
RETURN_QUERY = f"""query ReturnForSaga($id: ID!) {{
  return(id: $id) {{ {_RETURN_FIELDS} }}
}}"""
RETURN_APPROVE_MUTATION = """mutation ReturnApprove($input: ReturnApproveRequestInput!) {
  returnApproveRequest(input: $input) { return { id status } userErrors { field message code } }
}"""
RETURN_CLOSE_MUTATION = """mutation ReturnClose($id: ID!) {
  returnClose(id: $id) { return { id status } userErrors { field message code } }
}"""
RETURN_CANCEL_MUTATION = """mutation ReturnCancel($id: ID!) {
  returnCancel(id: $id, notifyCustomer: false) { return { id status } userErrors { field message code } }
}"""
REVERSE_DELIVERY_MUTATION = """mutation ReturnLabel($rfo: ID!, $lines: [ReverseDeliveryLineItemInput!]!,
    $tracking: ReverseDeliveryTrackingInput, $label: ReverseDeliveryLabelInput) {
  reverseDeliveryCreateWithShipping(reverseFulfillmentOrderId: $rfo, reverseDeliveryLineItems: $lines,
      trackingInput: $tracking, labelInput: $label, notifyCustomer: true) {
    reverseDelivery { id }
    userErrors { field message code }
  }
}"""
REFUNDS_QUERY = f"""query OrderRefunds($id: ID!) {{
  order(id: $id) {{ id currencyCode refunds(first: 50) {{ id legacyResourceId note totalRefundedSet {{ {_MONEY} }} }} }}
}}"""

WEBHOOKS_QUERY = """query WebhookSubscriptions($first: Int!, $after: String) {
  webhookSubscriptions(first: $first, after: $after) {
    nodes { id topic uri }
    pageInfo { hasNextPage endCursor }
  }
}"""

WEBHOOK_CREATE_MUTATION = """mutation WebhookSubscriptionCreate($topic: WebhookSubscriptionTopic!,
    $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}"""

WEBHOOK_DELETE_MUTATION = """mutation WebhookSubscriptionDelete($id: ID!) {
  webhookSubscriptionDelete(id: $id) { deletedWebhookSubscriptionId userErrors { field message } }
}"""


# --- Small helpers --------------------------------------------------------------------------------


def order_gid(channel_order_id: str | int) -> str:
    """An order's global ID, from either its numeric id or its global ID."""
    value = str(channel_order_id).strip()
    if value.startswith("gid://shopify/Order/"):
        return value
    if not value.isdigit():
        raise ValidationRejectedError(f"not a Shopify order id: {value!r}", system=SYSTEM, vendor_code="INVALID_ID")
    return f"gid://shopify/Order/{value}"


def numeric_id(global_id: str | int) -> str:
    """The numeric tail of a global ID (`gid://shopify/Order/123` -> `123`)."""
    return str(global_id).rsplit("/", 1)[-1].split("?", 1)[0]


def supports_idempotent_directive(api_version: str) -> bool:
    """Whether the API version accepts `@idempotent(key:)` (2026-01 and later)."""
    return api_version == "unstable" or api_version >= "2026-01"


def throttle_wait_seconds(cost: Mapping[str, Any] | None) -> float | None:
    """How long until the bucket holds the requested cost again: (requested - available) / restoreRate."""
    if not cost:
        return None
    status = cost.get("throttleStatus") or {}
    try:
        requested = float(cost["requestedQueryCost"])
        available = float(status["currentlyAvailable"])
        restore = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return None
    if restore <= 0:
        return None
    return max(0.0, (requested - available) / restore)


def _error_code(error: Mapping[str, Any]) -> str | None:
    extensions = error.get("extensions")
    code = extensions.get("code") if isinstance(extensions, Mapping) else None
    return str(code) if code else None


def _messages(errors: Any) -> str:
    if isinstance(errors, str):
        return errors
    if isinstance(errors, Mapping):
        return "; ".join(f"{k}: {v}" for k, v in errors.items())
    if isinstance(errors, Sequence):
        return "; ".join(str(e.get("message", e)) if isinstance(e, Mapping) else str(e) for e in errors)
    return str(errors)


def user_errors_to_exception(user_errors: Sequence[Mapping[str, Any]], operation: str) -> PermanentError:
    """userErrors as the adapter error they mean: a state conflict, a missing record, or rejected input."""
    parts = []
    for error in user_errors:
        where = ".".join(error.get("field") or [])
        parts.append(f"{where}: {error.get('message')}" if where else str(error.get("message")))
    message = f"{operation} refused: " + "; ".join(parts)
    codes = [str(e["code"]) for e in user_errors if e.get("code")]
    code = codes[0] if codes else "USER_ERROR"
    kwargs: dict[str, Any] = {"system": SYSTEM, "status_code": 200, "vendor_code": code, "details": list(user_errors)}
    if "NOT_FOUND" in codes:
        return NotFoundError(message, **kwargs)
    if any(c in CONFLICT_CODES for c in codes) or any(
        _CONFLICT_WORDING.search(str(e.get("message"))) for e in user_errors
    ):
        return ConflictError(message, **kwargs)
    return ValidationRejectedError(message, **kwargs)


def graphql_errors_to_exception(errors: Sequence[Mapping[str, Any]], status_code: int) -> AdapterError:
    """Top-level GraphQL errors as an adapter error, keeping Shopify's code and message."""
    code = next((c for c in (_error_code(e) for e in errors) if c), None)
    message = _messages(errors)
    kwargs: dict[str, Any] = {
        "system": SYSTEM,
        "status_code": status_code,
        "vendor_code": code,
        "details": list(errors),
    }
    if code == "ACCESS_DENIED":
        return AuthenticationError(message, **kwargs)
    if code in TRANSIENT_CODES:
        return TransientError(message, **kwargs)
    # MAX_COST_EXCEEDED, undefinedField, BAD_REQUEST...: the request itself must change.
    return PermanentError(message, **kwargs)


# --- Webhooks -------------------------------------------------------------------------------------


def verify_webhook(raw_body: bytes, hmac_header: str | None, secrets: list[str]) -> bool:
    """Whether a webhook was signed by Shopify: base64 HMAC-SHA256 of the raw body with a client secret.

    Pass the current secret and, during a rotation, the previous one: Shopify may keep signing with
    the old secret for up to an hour.
    """
    if not hmac_header:
        return False
    supplied = hmac_header.strip().encode()
    valid = False
    for secret in secrets:
        if not secret:
            continue
        expected = base64.b64encode(hmac.new(secret.encode(), raw_body, hashlib.sha256).digest())
        # Check every secret, so the time taken does not say which one matched.
        valid = hmac.compare_digest(expected, supplied) or valid
    return valid


def webhook_secrets(settings: ShopifySettings) -> list[str]:
    """The secrets a webhook may be signed with: the client secret, and the previous one during a rotation."""
    secrets = [settings.client_secret.get_secret_value()]
    if settings.previous_client_secret is not None:
        secrets.append(settings.previous_client_secret.get_secret_value())
    return secrets


def _rejected(message: str, field: str) -> ValidationRejectedError:
    return ValidationRejectedError(
        f"{message} ({field})", system=SYSTEM, vendor_code="INVALID_ORDER", details={"field": field}
    )


def _decimal(value: Any, field: str) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise _rejected(f"not a decimal amount: {value!r}", field) from exc


def _money(value: Any, currency: str, field: str) -> Money:
    return Money(amount=_decimal(value if value is not None else "0", field), currency=currency)


def _timestamp(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise _rejected("missing timestamp", field)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _rejected(f"not an ISO timestamp: {value!r}", field) from exc


def _financial_status(value: Any) -> FinancialStatus:
    text = str(value or "paid").lower()
    if text == "expired":
        return FinancialStatus.VOIDED
    try:
        return FinancialStatus(text)
    except ValueError:
        return FinancialStatus.PENDING


def _person(first: Any, last: Any, fallback: Any = None) -> str | None:
    name = " ".join(str(p).strip() for p in (first, last) if p and str(p).strip())
    return name or (str(fallback).strip() if fallback and str(fallback).strip() else None)


def _build_order(fields: dict[str, Any]) -> Order:
    """Construct the canonical order; a field the model refuses becomes a ValidationRejectedError."""
    try:
        return Order(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValidationRejectedError(
            f"Shopify order {fields.get('channel_order_id')} rejected: {where}: {first['msg']}",
            system=SYSTEM,
            vendor_code="INVALID_ORDER",
            details={"field": where, "errors": exc.errors(include_url=False, include_context=False)},
        ) from exc


def _rest_address(data: Mapping[str, Any], email: str | None, field: str) -> Address:
    name = _person(data.get("first_name"), data.get("last_name"), data.get("name") or data.get("company"))
    if name is None:
        raise _rejected("address has no recipient name", f"{field}.name")
    try:
        return Address(
            name=name,
            company=data.get("company") or None,
            line1=data.get("address1") or "",
            line2=data.get("address2") or None,
            city=data.get("city") or "",
            region=data.get("province_code") or None,
            postal_code=data.get("zip") or None,
            country=data.get("country_code") or "",
            phone=data.get("phone") or None,
            email=email,
        )
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise _rejected(f"address is incomplete: {exc.errors()[0]['msg']}", f"{field}.{where}") from exc


def _rest_taxes(taxes: Any, currency: str, field: str) -> list[TaxLine]:
    return [
        TaxLine(
            title=t.get("title") or "Tax",
            rate=_decimal(t.get("rate") or 0, f"{field}[{i}].rate"),
            amount=_money(t.get("price"), currency, f"{field}[{i}].price"),
        )
        for i, t in enumerate(taxes or [])
    ]


def _rest_discounts(
    allocations: Any, applications: Sequence[Mapping[str, Any]], currency: str, field: str
) -> list[Discount]:
    discounts = []
    for i, allocation in enumerate(allocations or []):
        index = allocation.get("discount_application_index")
        app = applications[index] if isinstance(index, int) and 0 <= index < len(applications) else {}
        discounts.append(
            Discount(
                title=app.get("title") or app.get("code") or app.get("description") or "discount",
                code=app.get("code") or None,
                amount=_money(allocation.get("amount"), currency, f"{field}[{i}].amount"),
            )
        )
    return discounts


def shopify_id(value: Any, field: str) -> str:
    """A Shopify REST id (a positive integer, or its digits) as a string; anything else is refused by name."""
    # bool is an int in Python, and `True` is no order id.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return value
    raise _rejected(f"{field} must be a positive integer id, got {value!r}"[:200], field)


def order_from_webhook(payload: Mapping[str, Any]) -> Order:
    """A REST-shaped `orders/create` (or `orders/cancelled`) webhook body as a canonical order."""
    if payload.get("id") is None:
        raise _rejected("order has no id", "id")
    order_id = shopify_id(payload.get("id"), "id")
    currency = str(payload.get("currency") or "")
    email = payload.get("email") or payload.get("contact_email") or None
    shipping = payload.get("shipping_address")
    if not shipping:
        raise _rejected(f"Shopify order {order_id} has no shipping address", "shipping_address")
    ship_to = _rest_address(shipping, email, "shipping_address")
    billing = payload.get("billing_address")
    applications = payload.get("discount_applications") or []
    lines = []
    for i, item in enumerate(payload.get("line_items") or []):
        sku = str(item.get("sku") or "").strip()
        if not sku:
            raise _rejected(
                f"Shopify order {order_id} line {item.get('id')} ({item.get('name')!r}) has an empty SKU",
                f"line_items[{i}].sku",
            )
        lines.append(
            OrderLine(
                line_id=shopify_id(item.get("id"), f"line_items[{i}].id"),
                sku=sku,
                name=item.get("name") or item.get("title") or "",
                quantity=item.get("quantity") or 0,
                unit_price=_money(item.get("price"), currency, f"line_items[{i}].price"),
                discounts=_rest_discounts(item.get("discount_allocations"), applications, currency, f"line_items[{i}]"),
                tax_lines=_rest_taxes(item.get("tax_lines"), currency, f"line_items[{i}].tax_lines"),
                requires_shipping=item.get("requires_shipping", True) is not False,
            )
        )
    shipping_lines = payload.get("shipping_lines") or []
    charges = [
        ShippingCharge(
            title=s.get("title") or s.get("code") or "Shipping",
            code=s.get("code") or None,
            amount=_money(s.get("price"), currency, f"shipping_lines[{i}].price"),
            discounts=_rest_discounts(s.get("discount_allocations"), applications, currency, f"shipping_lines[{i}]"),
            tax_lines=_rest_taxes(s.get("tax_lines"), currency, f"shipping_lines[{i}].tax_lines"),
        )
        for i, s in enumerate(shipping_lines)
    ]
    customer = payload.get("customer") or {}
    customer_name = _person(customer.get("first_name"), customer.get("last_name"), customer.get("email") or email)
    return _build_order(
        {
            "channel": Channel.SHOPIFY,
            "channel_order_id": str(order_id),
            "order_number": str(payload.get("name") or payload.get("order_number") or order_id),
            "placed_at": _timestamp(payload.get("created_at"), "created_at"),
            "currency": currency,
            "customer": Customer(
                channel_customer_id=str(customer["id"]) if customer.get("id") is not None else None,
                name=customer_name or ship_to.name,
                email=customer.get("email") or email,
            ),
            "ship_to": ship_to,
            "bill_to": _rest_address(billing, email, "billing_address") if billing else None,
            "lines": lines,
            "shipping": charges,
            "tax_lines": _rest_taxes(payload.get("tax_lines"), currency, "tax_lines"),
            "total": _money(payload.get("total_price"), currency, "total_price"),
            "financial_status": _financial_status(payload.get("financial_status")),
            "ship_method": (shipping_lines[0].get("code") or shipping_lines[0].get("title"))
            if shipping_lines
            else None,
            "note": payload.get("note") or None,
        }
    )


def _gql_money(bag: Mapping[str, Any] | None, currency: str, field: str) -> Money:
    amount = ((bag or {}).get("shopMoney") or {}).get("amount")
    return _money(amount, currency, field)


def _gql_taxes(taxes: Any, currency: str, field: str) -> list[TaxLine]:
    return [
        TaxLine(
            title=t.get("title") or "Tax",
            rate=_decimal(t.get("rate") or 0, f"{field}[{i}].rate"),
            amount=_gql_money(t.get("priceSet"), currency, f"{field}[{i}].priceSet"),
        )
        for i, t in enumerate(taxes or [])
    ]


def _gql_discounts(allocations: Any, currency: str, field: str) -> list[Discount]:
    discounts = []
    for i, allocation in enumerate(allocations or []):
        app = allocation.get("discountApplication") or {}
        discounts.append(
            Discount(
                title=app.get("title") or app.get("code") or "discount",
                code=app.get("code") or None,
                amount=_gql_money(allocation.get("allocatedAmountSet"), currency, f"{field}[{i}]"),
            )
        )
    return discounts


def _gql_address(data: Mapping[str, Any], email: str | None, field: str) -> Address:
    return _rest_address(
        {
            "first_name": data.get("firstName"),
            "last_name": data.get("lastName"),
            "name": data.get("name"),
            "company": data.get("company"),
            "address1": data.get("address1"),
            "address2": data.get("address2"),
            "city": data.get("city"),
            "province_code": data.get("provinceCode"),
            "zip": data.get("zip"),
            "country_code": data.get("countryCodeV2"),
            "phone": data.get("phone"),
        },
        email,
        field,
    )


def order_from_graphql(node: Mapping[str, Any]) -> Order:
    """An Admin GraphQL `Order` node (as selected by `ORDER_QUERY`) as a canonical order."""
    order_id = node.get("legacyResourceId") or numeric_id(str(node.get("id")))
    currency = str(node.get("currencyCode") or "")
    email = node.get("email") or None
    if not node.get("shippingAddress"):
        raise _rejected(f"Shopify order {order_id} has no shipping address", "shippingAddress")
    ship_to = _gql_address(node["shippingAddress"], email, "shippingAddress")
    line_page = node.get("lineItems") or {}
    if (line_page.get("pageInfo") or {}).get("hasNextPage"):
        raise _rejected(f"Shopify order {order_id} has more lines than one page holds", "lineItems")
    lines = []
    for i, item in enumerate(line_page.get("nodes") or []):
        sku = str(item.get("sku") or "").strip()
        if not sku:
            raise _rejected(
                f"Shopify order {order_id} line {numeric_id(str(item.get('id')))} ({item.get('name')!r}) "
                "has an empty SKU",
                f"lineItems[{i}].sku",
            )
        lines.append(
            OrderLine(
                line_id=numeric_id(str(item.get("id"))),
                sku=sku,
                name=item.get("name") or "",
                quantity=item.get("quantity") or 0,
                unit_price=_gql_money(
                    item.get("originalUnitPriceSet"), currency, f"lineItems[{i}].originalUnitPriceSet"
                ),
                discounts=_gql_discounts(
                    item.get("discountAllocations"), currency, f"lineItems[{i}].discountAllocations"
                ),
                tax_lines=_gql_taxes(item.get("taxLines"), currency, f"lineItems[{i}].taxLines"),
                requires_shipping=item.get("requiresShipping", True) is not False,
            )
        )
    shipping_lines = (node.get("shippingLines") or {}).get("nodes") or []
    charges = [
        ShippingCharge(
            title=s.get("title") or s.get("code") or "Shipping",
            code=s.get("code") or None,
            amount=_gql_money(s.get("originalPriceSet"), currency, f"shippingLines[{i}].originalPriceSet"),
            discounts=_gql_discounts(s.get("discountAllocations"), currency, f"shippingLines[{i}].discountAllocations"),
            tax_lines=_gql_taxes(s.get("taxLines"), currency, f"shippingLines[{i}].taxLines"),
        )
        for i, s in enumerate(shipping_lines)
    ]
    customer = node.get("customer") or {}
    billing = node.get("billingAddress")
    fulfillment_orders = (node.get("fulfillmentOrders") or {}).get("nodes") or []
    location = (
        ((fulfillment_orders[0].get("assignedLocation") or {}).get("location") or {}) if fulfillment_orders else {}
    )
    return _build_order(
        {
            "channel": Channel.SHOPIFY,
            "channel_order_id": str(order_id),
            "order_number": str(node.get("name") or order_id),
            "placed_at": _timestamp(node.get("createdAt"), "createdAt"),
            "currency": currency,
            "customer": Customer(
                channel_customer_id=(customer.get("legacyResourceId") or numeric_id(customer["id"]))
                if customer.get("id")
                else None,
                name=customer.get("displayName") or customer.get("email") or ship_to.name,
                email=customer.get("email") or email,
            ),
            "ship_to": ship_to,
            "bill_to": _gql_address(billing, email, "billingAddress") if billing else None,
            "lines": lines,
            "shipping": charges,
            "tax_lines": _gql_taxes(node.get("taxLines"), currency, "taxLines"),
            "total": _gql_money(node.get("totalPriceSet"), currency, "totalPriceSet"),
            "financial_status": _financial_status(node.get("displayFinancialStatus")),
            "ship_method": (shipping_lines[0].get("code") or shipping_lines[0].get("title"))
            if shipping_lines
            else None,
            "location_id": numeric_id(location["id"]) if location.get("id") else None,
            "note": node.get("note") or None,
        }
    )


def cancellation_from_webhook(payload: Mapping[str, Any]) -> ShopifyOrderCancellation:
    """An `orders/cancelled` webhook body as the cancellation the saga is signalled with."""
    order_id = payload.get("id")
    if order_id is None:
        raise _rejected("order has no id", "id")
    if not payload.get("cancelled_at"):
        raise _rejected(f"Shopify order {order_id} is not cancelled", "cancelled_at")
    return ShopifyOrderCancellation(
        channel_order_id=str(order_id),
        order_key=order_key(Channel.SHOPIFY, str(order_id)),
        cancelled_at=_timestamp(payload.get("cancelled_at"), "cancelled_at"),
        reason=payload.get("cancel_reason") or None,
        financial_status=_financial_status(payload.get("financial_status")),
    )


def refund_from_webhook(payload: Mapping[str, Any], *, currency: str | None = None) -> Refund:
    """A `refunds/create` webhook body as a canonical refund (money from its refund transactions).

    The REST refund carries no order currency; it is read from the transactions or `*_set` twins,
    else the caller's `currency` (the order's) is used.
    """
    order_id = payload.get("order_id")
    if order_id is None:
        raise _rejected("refund has no order_id", "order_id")
    transactions = payload.get("transactions") or []
    items = payload.get("refund_line_items") or []
    found = next((t.get("currency") for t in transactions if t.get("currency")), None) or next(
        (
            ((i.get("subtotal_set") or {}).get("shop_money") or {}).get("currency_code")
            for i in items
            if i.get("subtotal_set")
        ),
        None,
    )
    money_currency = found or currency
    if not money_currency:
        raise _rejected(f"refund {payload.get('id')} names no currency; pass the order's", "currency")
    lines = []
    for i, item in enumerate(items):
        line_item = item.get("line_item") or {}
        sku = str(line_item.get("sku") or "").strip()
        if not sku:
            raise _rejected(
                f"refund {payload.get('id')} line {item.get('line_item_id')} has no SKU",
                f"refund_line_items[{i}].line_item.sku",
            )
        subtotal = ((item.get("subtotal_set") or {}).get("shop_money") or {}).get("amount", item.get("subtotal"))
        tax = ((item.get("total_tax_set") or {}).get("shop_money") or {}).get("amount", item.get("total_tax"))
        lines.append(
            RefundLine(
                line_id=str(item.get("line_item_id") or line_item.get("id")),
                sku=sku,
                quantity=int(item.get("quantity") or 0),
                amount=_money(
                    _decimal(subtotal or 0, f"refund_line_items[{i}].subtotal")
                    + _decimal(tax or 0, f"refund_line_items[{i}].total_tax"),
                    money_currency,
                    f"refund_line_items[{i}]",
                ),
                restock=(item.get("restock_type") or "no_restock") != "no_restock",
            )
        )
    refunded = sum(
        (
            _decimal(t.get("amount"), f"transactions[{i}].amount")
            for i, t in enumerate(transactions)
            if t.get("kind") == "refund" and t.get("status", "success") == "success"
        ),
        Decimal(0),
    )
    shipping = sum(
        (
            -_decimal(a.get("amount") or 0, "order_adjustments.amount")
            for a in payload.get("order_adjustments") or []
            if a.get("kind") == "shipping_refund"
        ),
        Decimal(0),
    )
    return Refund(
        order_key=order_key(Channel.SHOPIFY, str(order_id)),
        lines=lines,
        shipping=Money(amount=shipping, currency=money_currency) if shipping else None,
        total=Money(amount=refunded, currency=money_currency),
        note=payload.get("note") or None,
    )


def refund_marker(idempotency_key: str) -> str:
    """The tag written into a refund's note so a retry can find the refund it already made."""
    return f"{REFUND_MARKER_PREFIX}{idempotency_key}]"


REFUND_MARKER_PREFIX = "[orderflow:"


def refund_issued_by_orderflow(payload: Mapping[str, Any]) -> bool:
    """Whether a `refunds/create` body is a refund orderflow made (its note carries orderflow's marker)."""
    note = payload.get("note")
    return isinstance(note, str) and REFUND_MARKER_PREFIX in note


def return_gid(channel_return_id: str | int) -> str:
    """A return's global ID, from either its numeric id or its global ID."""
    value = str(channel_return_id).strip()
    if value.startswith("gid://shopify/Return/"):
        return value
    if not value.isdigit():
        raise ValidationRejectedError(f"not a Shopify return id: {value!r}", system=SYSTEM, vendor_code="INVALID_ID")
    return f"gid://shopify/Return/{value}"


def _reason(value: Any) -> str | None:
    text = str(value or "").strip().lower()
    return None if text in ("", "unknown") else text


def return_from_webhook(
    payload: Mapping[str, Any], *, order: Order | None = None, requested_at: datetime | None = None
) -> Return:
    """A `returns/request` or `returns/approve` body as a canonical return.

    Shopify's return webhooks name line items by id only, never by SKU: the SKUs come from the
    body when a line item carries one, else from `order` (the order as `get_order` reads it, whose
    line ids are Shopify's). The body has no timestamp either: `requested_at` (the webhook's
    `X-Shopify-Triggered-At`) is used unless the body has `created_at`. A line whose SKU cannot be
    found, or a missing field, is refused with the field named; `ShopifyClient.get_return` reads a
    return with everything in one call.
    """
    return_id = payload.get("id")
    if return_id is None or not str(return_id).strip():
        raise _rejected("return webhook body has no id", "id")
    order_ref = payload.get("order") or {}
    order_id = order_ref.get("id") if isinstance(order_ref, Mapping) else None
    if order_id is None:
        order_id = payload.get("order_id")
    if order_id is None:
        raise _rejected(f"return {return_id} names no order", "order.id")
    skus = {line.line_id: line.sku for line in order.lines} if order is not None else {}
    if order is not None and order.channel_order_id != str(order_id):
        raise _rejected(f"return {return_id} is for order {order_id}, not {order.channel_order_id}", "order.id")
    lines = []
    for i, item in enumerate(payload.get("return_line_items") or []):
        line_item = (item.get("fulfillment_line_item") or {}).get("line_item") or {}
        sku = str(line_item.get("sku") or "").strip() or skus.get(str(line_item.get("id")), "")
        if not sku:
            raise _rejected(
                f"return {return_id} line {item.get('id')} has no SKU; pass the order to find it",
                f"return_line_items[{i}].fulfillment_line_item.line_item.sku",
            )
        try:
            quantity = int(item.get("quantity"))
        except (TypeError, ValueError):
            raise _rejected(f"return {return_id} line {item.get('id')} has no quantity",
                            f"return_line_items[{i}].quantity") from None  # fmt: skip
        lines.append((sku, quantity, _reason(item.get("return_reason"))))
    if not lines:
        raise _rejected(f"return {return_id} has no line items", "return_line_items")
    when = requested_at
    if payload.get("created_at"):
        when = _timestamp(payload.get("created_at"), "created_at")
    if when is None:
        raise _rejected(f"return {return_id} has no time; pass requested_at", "created_at")
    try:
        return Return(
            channel=Channel.SHOPIFY,
            return_id=str(return_id),
            order_key=order_key(Channel.SHOPIFY, str(order_id)),
            lines=[ReturnLine(sku=sku, quantity=qty, reason=reason) for sku, qty, reason in lines],
            requested_at=when,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _rejected(f"return {return_id}: {first['msg']}", ".".join(str(p) for p in first["loc"])) from None


def return_from_graphql(node: Mapping[str, Any]) -> Return:
    """An Admin GraphQL `Return` node (as `RETURN_QUERY` selects it) as a canonical return."""
    return_id = numeric_id(str(node.get("id")))
    order = node.get("order") or {}
    order_id = order.get("legacyResourceId") or numeric_id(str(order.get("id")))
    lines = []
    for i, item in enumerate((node.get("returnLineItems") or {}).get("nodes") or []):
        sku = str((((item.get("fulfillmentLineItem") or {}).get("lineItem")) or {}).get("sku") or "").strip()
        if not sku:
            raise _rejected(f"return {return_id} line {item.get('id')} has no SKU",
                            f"returnLineItems[{i}].fulfillmentLineItem.lineItem.sku")  # fmt: skip
        lines.append(ReturnLine(sku=sku, quantity=int(item["quantity"]), reason=_reason(item.get("returnReason"))))
    return Return(
        channel=Channel.SHOPIFY,
        return_id=return_id,
        order_key=order_key(Channel.SHOPIFY, str(order_id)),
        lines=lines,
        requested_at=_timestamp(node.get("createdAt"), "createdAt"),
    )


# --- The client -----------------------------------------------------------------------------------


class ShopifyClient:
    """Shopify Admin GraphQL for the order sagas: read orders, cancel, fulfil, refund, manage webhooks."""

    def __init__(self, http: httpx.AsyncClient, settings: ShopifySettings) -> None:
        self._http = http
        self._settings = settings
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        self.last_cost: dict[str, Any] | None = None

    @property
    def graphql_url(self) -> str:
        """The Admin GraphQL endpoint of the configured store and API version."""
        return f"{self._settings.base_url.rstrip('/')}/admin/api/{self._settings.api_version}/graphql.json"

    # -- authentication ----------------------------------------------------------------------------

    async def _access_token(self) -> str:
        if self._settings.auth_method == "access_token":
            return self._settings.access_token.get_secret_value()
        async with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_expires_at:
                await self._fetch_token()
            assert self._token is not None
            return self._token

    async def _fetch_token(self) -> None:
        url = f"{self._settings.base_url.rstrip('/')}/admin/oauth/access_token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self._settings.client_id,
            "client_secret": self._settings.client_secret.get_secret_value(),
        }
        try:
            response = await self._http.post(url, data=form, timeout=self._settings.timeout_seconds)
        except httpx.TransportError as exc:
            raise transport_error(exc, system=SYSTEM) from exc
        body = _json(response)
        if response.status_code != 200 or not isinstance(body.get("access_token"), str):
            code = str(body.get("error") or response.status_code)
            reason = body.get("error_description") or body.get("error") or response.text[:200]
            message = f"client credentials refused: {reason}"
            if response.status_code in (400, 401, 403):
                raise AuthenticationError(message, system=SYSTEM, status_code=response.status_code, vendor_code=code)
            raise classify_status(response.status_code, message, system=SYSTEM, vendor_code=code)
        expires_in = float(body.get("expires_in") or 86399)
        self._token = body["access_token"]
        self._token_expires_at = time.monotonic() + max(
            0.0, expires_in - min(TOKEN_REFRESH_MARGIN_SECONDS, expires_in / 10)
        )

    # -- transport, throttle, errors ---------------------------------------------------------------

    async def execute(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run one GraphQL document; returns `data`, waits out short throttles, raises typed errors."""
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            token = await self._access_token()
            try:
                response = await self._http.post(
                    self.graphql_url,
                    json={"query": query, "variables": dict(variables or {})},
                    headers={"X-Shopify-Access-Token": token, "Accept": "application/json"},
                    timeout=self._settings.timeout_seconds,
                )
            except httpx.TransportError as exc:
                raise transport_error(exc, system=SYSTEM) from exc
            body = _json(response)
            cost = (body.get("extensions") or {}).get("cost") if isinstance(body.get("extensions"), Mapping) else None
            if cost:
                self.last_cost = dict(cost)
            if response.status_code == 401 and self._settings.auth_method == "client_credentials" and not refreshed:
                # The cached token was revoked or expired early: fetch a new one, once.
                refreshed = True
                self._token = None
                continue
            errors = body.get("errors")
            if _is_throttled(errors) or (response.status_code == 429 and not errors):
                wait = throttle_wait_seconds(cost)
                if wait is None:
                    wait = retry_after_seconds(response.headers) or 1.0
                if wait <= self._settings.max_throttle_wait_seconds and attempt < MAX_THROTTLE_ATTEMPTS:
                    log.info("shopify throttled; waiting %.2fs for the cost bucket to refill", wait)
                    # A little extra so the bucket has really refilled when we come back.
                    await asyncio.sleep(wait + 0.05)
                    continue
                raise RateLimitedError(
                    f"Shopify throttled the request; the bucket refills in {wait:.1f}s",
                    retry_after=wait,
                    system=SYSTEM,
                    status_code=response.status_code,
                    vendor_code="THROTTLED",
                    details=cost,
                )
            if response.status_code >= 400:
                raise classify_status(
                    response.status_code,
                    _messages(errors) if errors else response.text[:500],
                    system=SYSTEM,
                    vendor_code=_error_code(errors[0]) if isinstance(errors, list) and errors else None,
                    details=body or None,
                    retry_after=retry_after_seconds(response.headers),
                )
            if errors:
                raise graphql_errors_to_exception(errors if isinstance(errors, list) else [{"message": errors}], 200)
            data = body.get("data")
            if not isinstance(data, dict):
                raise TransientError("Shopify answered without data", system=SYSTEM, status_code=response.status_code)
            return data

    # -- orders ------------------------------------------------------------------------------------

    async def get_order(self, channel_order_id: str) -> Order:
        """The order as Shopify holds it now, in canonical form (numeric id or global ID)."""
        data = await self.execute(ORDER_QUERY, {"id": order_gid(channel_order_id)})
        node = data.get("order")
        if node is None:
            raise NotFoundError(f"Shopify order {channel_order_id} not found", system=SYSTEM, vendor_code="NOT_FOUND")
        return order_from_graphql(node)

    async def cancel_order(
        self,
        channel_order_id: str,
        *,
        reason: str = "OTHER",
        restock: bool = True,
        notify_customer: bool = False,
        staff_note: str | None = None,
        refund: bool = True,
    ) -> ShopifyCancelJob:
        """Cancel an order on Shopify (asynchronous); an order already cancelled counts as success."""
        gid = order_gid(channel_order_id)
        if await self._is_cancelled(gid):
            return ShopifyCancelJob(done=True, already_cancelled=True)
        reason_code = reason.upper() if reason.upper() in CANCEL_REASONS else "OTHER"
        variables: dict[str, Any] = {
            "orderId": gid,
            "reason": reason_code,
            "restock": restock,
            "notifyCustomer": notify_customer,
            "staffNote": staff_note,
            "refundMethod": {"originalPaymentMethodsRefund": True} if refund else None,
        }
        result = (await self.execute(ORDER_CANCEL_MUTATION, variables))["orderCancel"] or {}
        errors = result.get("orderCancelUserErrors") or []
        if errors:
            # A cancellation that landed before (a retry after a lost response) is what we wanted.
            if await self._is_cancelled(gid):
                return ShopifyCancelJob(done=True, already_cancelled=True)
            raise user_errors_to_exception(errors, "orderCancel")
        job = result.get("job") or {}
        return ShopifyCancelJob(job_id=job.get("id"), done=bool(job.get("done")))

    async def get_cancel_job(self, job_id: str) -> ShopifyCancelJob:
        """Whether an order-cancellation job has finished."""
        job = (await self.execute(JOB_QUERY, {"id": job_id})).get("job")
        if job is None:
            raise NotFoundError(f"Shopify job {job_id} not found", system=SYSTEM, vendor_code="NOT_FOUND")
        return ShopifyCancelJob(job_id=job["id"], done=bool(job["done"]))

    async def _is_cancelled(self, gid: str) -> bool:
        order = (await self.execute(ORDER_STATE_QUERY, {"id": gid})).get("order")
        if order is None:
            raise NotFoundError(f"Shopify order {numeric_id(gid)} not found", system=SYSTEM, vendor_code="NOT_FOUND")
        return order.get("cancelledAt") is not None

    # -- fulfillment -------------------------------------------------------------------------------

    async def create_fulfillment(
        self, channel_order_id: str, shipment: Shipment, *, notify_customer: bool = False
    ) -> ShopifyFulfillmentRef:
        """Record a shipment on the order with its tracking; a retry finds the fulfillment it made."""
        gid = order_gid(channel_order_id)
        order = (await self.execute(FULFILLMENT_CONTEXT_QUERY, {"id": gid})).get("order")
        if order is None:
            raise NotFoundError(f"Shopify order {channel_order_id} not found", system=SYSTEM, vendor_code="NOT_FOUND")
        number = shipment.tracking.number
        # Units already recorded under this tracking number, by an earlier (possibly lost) attempt.
        existing = [
            f
            for f in order.get("fulfillments") or []
            if any(t.get("number") == number for t in f.get("trackingInfo") or [])
        ]
        already: dict[str, int] = {}
        for f in existing:
            for item in (f.get("fulfillmentLineItems") or {}).get("nodes") or []:
                sku = (item.get("lineItem") or {}).get("sku") or ""
                already[sku] = already.get(sku, 0) + int(item.get("quantity") or 0)
        needed: dict[str, int] = {}
        for line in shipment.lines:
            needed[line.sku] = needed.get(line.sku, 0) + line.quantity
        remaining_needed = {sku: qty - already.get(sku, 0) for sku, qty in needed.items() if qty > already.get(sku, 0)}
        if not remaining_needed:
            first = existing[0]
            return ShopifyFulfillmentRef(
                fulfillment_id=first["id"],
                status=first.get("status") or "SUCCESS",
                tracking_number=number,
                created=False,
            )
        if order.get("cancelledAt"):
            raise ConflictError(
                f"Shopify order {channel_order_id} is cancelled; it cannot be fulfilled",
                system=SYSTEM,
                vendor_code="ORDER_CANCELLED",
            )
        plan = self._plan_fulfillment(channel_order_id, order, remaining_needed)
        created: ShopifyFulfillmentRef | None = None
        for location_groups in plan.values():
            variables = {
                "fulfillment": {
                    "notifyCustomer": notify_customer,
                    "trackingInfo": {
                        "company": shipment.tracking.carrier,
                        "number": number,
                        "url": shipment.tracking.url,
                    },
                    "lineItemsByFulfillmentOrder": [
                        {"fulfillmentOrderId": fo_id, "fulfillmentOrderLineItems": items}
                        for fo_id, items in location_groups.items()
                    ],
                }
            }
            result = (await self.execute(FULFILLMENT_CREATE_MUTATION, variables))["fulfillmentCreate"] or {}
            if result.get("userErrors"):
                raise user_errors_to_exception(result["userErrors"], "fulfillmentCreate")
            made = result["fulfillment"]
            created = created or ShopifyFulfillmentRef(
                fulfillment_id=made["id"], status=made.get("status") or "SUCCESS", tracking_number=number
            )
        assert created is not None
        return created

    @staticmethod
    def _plan_fulfillment(
        channel_order_id: str, order: Mapping[str, Any], needed: dict[str, int]
    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Which open fulfillment-order lines cover the shipment: {location: {fulfillment order: lines}}."""
        plan: dict[str, dict[str, list[dict[str, Any]]]] = {}
        left = dict(needed)
        for fo in (order.get("fulfillmentOrders") or {}).get("nodes") or []:
            if fo.get("status") not in ("OPEN", "IN_PROGRESS"):
                continue
            location = (((fo.get("assignedLocation") or {}).get("location")) or {}).get("id") or ""
            for line in (fo.get("lineItems") or {}).get("nodes") or []:
                sku = line.get("sku") or ""
                take = min(left.get(sku, 0), int(line.get("remainingQuantity") or 0))
                if take <= 0:
                    continue
                plan.setdefault(location, {}).setdefault(fo["id"], []).append({"id": line["id"], "quantity": take})
                left[sku] -= take
        short = {sku: qty for sku, qty in left.items() if qty > 0}
        if short:
            detail = ", ".join(f"{sku} x{qty}" for sku, qty in sorted(short.items()))
            raise ConflictError(
                f"Shopify order {channel_order_id} has nothing left to fulfil for {detail}",
                system=SYSTEM,
                vendor_code="NOTHING_TO_FULFILL",
                details={"unfulfillable": short},
            )
        return plan

    # -- refunds -----------------------------------------------------------------------------------

    async def refund(self, channel_order_id: str, refund: Refund, *, idempotency_key: str) -> ChannelRefundRef:
        """Refund money (and optionally restock units) on the order, once per idempotency key."""
        gid = order_gid(channel_order_id)
        order = (await self.execute(REFUND_CONTEXT_QUERY, {"id": gid})).get("order")
        if order is None:
            raise NotFoundError(f"Shopify order {channel_order_id} not found", system=SYSTEM, vendor_code="NOT_FOUND")
        currency = order["currencyCode"]
        marker = refund_marker(idempotency_key)
        for existing in order.get("refunds") or []:
            if marker in (existing.get("note") or ""):
                return _refund_ref(existing, currency)
        line_ids = {numeric_id(li["id"]): li["id"] for li in (order.get("lineItems") or {}).get("nodes") or []}
        fulfillment_orders = (order.get("fulfillmentOrders") or {}).get("nodes") or []
        location = (
            (((fulfillment_orders[0].get("assignedLocation") or {}).get("location")) or {}).get("id")
            if fulfillment_orders
            else None
        )
        refund_lines = []
        for line in refund.lines:
            if line.quantity == 0:
                continue
            line_gid = line_ids.get(numeric_id(line.line_id))
            if line_gid is None:
                raise ValidationRejectedError(
                    f"line {line.line_id} ({line.sku}) is not on Shopify order {channel_order_id}",
                    system=SYSTEM,
                    vendor_code="UNKNOWN_LINE",
                )
            item: dict[str, Any] = {
                "lineItemId": line_gid,
                "quantity": line.quantity,
                "restockType": "RETURN" if line.restock else "NO_RESTOCK",
            }
            if line.restock and location:
                item["locationId"] = location
            refund_lines.append(item)
        sale = next(
            (
                t
                for t in order.get("transactions") or []
                if t.get("kind") in ("SALE", "CAPTURE") and t.get("status") == "SUCCESS"
            ),
            None,
        )
        refund_input: dict[str, Any] = {
            "orderId": gid,
            "note": f"{refund.note} {marker}" if refund.note else marker,
            "notify": False,
            "refundLineItems": refund_lines,
        }
        if refund.shipping is not None and refund.shipping.amount > 0:
            refund_input["shipping"] = {"amount": str(refund.shipping.amount)}
        if sale is not None and refund.total.amount > 0:
            refund_input["transactions"] = [
                {
                    "orderId": gid,
                    "parentId": sale["id"],
                    "amount": str(refund.total.amount),
                    "gateway": sale.get("gateway") or "manual",
                    "kind": "REFUND",
                }
            ]
        if supports_idempotent_directive(self._settings.api_version):
            data = await self.execute(
                REFUND_CREATE_IDEMPOTENT_MUTATION, {"input": refund_input, "key": idempotency_key}
            )
        else:
            data = await self.execute(REFUND_CREATE_MUTATION, {"input": refund_input})
        result = data["refundCreate"] or {}
        if result.get("userErrors"):
            raise user_errors_to_exception(result["userErrors"], "refundCreate")
        return _refund_ref(result["refund"], currency)

    async def find_refund(self, channel_order_id: str, idempotency_key: str) -> ChannelRefundRef | None:
        """The refund made on the order under this idempotency key (found by its note marker), if any."""
        order = (await self.execute(REFUNDS_QUERY, {"id": order_gid(channel_order_id)})).get("order")
        if order is None:
            raise NotFoundError(f"Shopify order {channel_order_id} not found", system=SYSTEM, vendor_code="NOT_FOUND")
        marker = refund_marker(idempotency_key)
        for existing in order.get("refunds") or []:
            if marker in (existing.get("note") or ""):
                return _refund_ref(existing, order["currencyCode"])
        return None

    # -- returns -------------------------------------------------------------------------------------

    async def _return_node(self, channel_return_id: str) -> dict[str, Any]:
        node = (await self.execute(RETURN_QUERY, {"id": return_gid(channel_return_id)})).get("return")
        if node is None:
            raise NotFoundError(f"Shopify return {channel_return_id} not found", system=SYSTEM, vendor_code="NOT_FOUND")
        return dict(node)

    async def get_return(self, channel_return_id: str) -> Return:
        """A return as Shopify holds it, with each line's SKU, quantity and reason."""
        return return_from_graphql(await self._return_node(channel_return_id))

    async def return_status(self, channel_return_id: str) -> str:
        """A return's status in Shopify's words, lower case: requested, open, closed, canceled, declined."""
        return str((await self._return_node(channel_return_id)).get("status") or "").lower()

    async def approve_return(self, channel_return_id: str) -> None:
        """Approve a customer's return request; a return already open (or closed) is left as it is."""
        node = await self._return_node(channel_return_id)
        await self._approve(channel_return_id, node)

    async def _approve(self, channel_return_id: str, node: Mapping[str, Any]) -> None:
        status = node.get("status")
        if status in ("OPEN", "CLOSED"):
            return
        if status != "REQUESTED":
            raise ConflictError(f"Shopify return {channel_return_id} is {status}; it cannot be approved",
                                system=SYSTEM, vendor_code=str(status))  # fmt: skip
        result = (await self.execute(RETURN_APPROVE_MUTATION, {"input": {"id": node["id"]}}))["returnApproveRequest"]
        if (result or {}).get("userErrors"):
            # An approval that landed before (a retry after a lost answer) is what we wanted.
            if (await self._return_node(channel_return_id)).get("status") == "OPEN":
                return
            raise user_errors_to_exception(result["userErrors"], "returnApproveRequest")

    async def attach_return_label(self, channel_return_id: str, label: Label) -> None:
        """Give the customer the return label: a reverse delivery with its tracking and label URL.

        A requested return is approved first (a label means the return is accepted). Safe to repeat:
        a reverse delivery with the label's tracking number already there is left alone.
        """
        node = await self._return_node(channel_return_id)
        if node.get("status") == "REQUESTED":
            await self._approve(channel_return_id, node)
            node = await self._return_node(channel_return_id)
        reverse_orders = (node.get("reverseFulfillmentOrders") or {}).get("nodes") or []
        for rfo in reverse_orders:
            for delivery in (rfo.get("reverseDeliveries") or {}).get("nodes") or []:
                tracking = ((delivery.get("deliverable") or {}).get("tracking")) or {}
                if tracking.get("number") == label.tracking_number:
                    return
        target = next((rfo for rfo in reverse_orders if rfo.get("status") == "OPEN"), None)
        if target is None:
            raise ConflictError(
                f"Shopify return {channel_return_id} is {node.get('status')} and has no open reverse fulfillment "
                "order to label", system=SYSTEM, vendor_code="NO_REVERSE_FULFILLMENT",
            )  # fmt: skip
        lines = [
            {"reverseFulfillmentOrderLineItemId": item["id"], "quantity": int(item["totalQuantity"])}
            for item in (target.get("lineItems") or {}).get("nodes") or []
        ]
        variables = {
            "rfo": target["id"],
            "lines": lines,
            "tracking": {"number": label.tracking_number, "url": label.tracking_url},
            "label": {"fileUrl": label.label_url},
        }
        result = (await self.execute(REVERSE_DELIVERY_MUTATION, variables))["reverseDeliveryCreateWithShipping"]
        if (result or {}).get("userErrors"):
            raise user_errors_to_exception(result["userErrors"], "reverseDeliveryCreateWithShipping")

    async def close_return(self, channel_return_id: str) -> None:
        """Close a return that is done; closed already is fine, a cancelled or unapproved one is a conflict."""
        await self._move_return(channel_return_id, RETURN_CLOSE_MUTATION, "returnClose", "CLOSED", ("OPEN",))

    async def cancel_return(self, channel_return_id: str) -> None:
        """Cancel a requested or open return; cancelled already is fine, a closed one is a conflict."""
        await self._move_return(
            channel_return_id, RETURN_CANCEL_MUTATION, "returnCancel", "CANCELED", ("REQUESTED", "OPEN")
        )

    async def _move_return(
        self, channel_return_id: str, mutation: str, operation: str, target: str, allowed: tuple[str, ...]
    ) -> None:
        node = await self._return_node(channel_return_id)
        status = node.get("status")
        if status == target:
            return
        if status not in allowed:
            raise ConflictError(f"Shopify return {channel_return_id} is {status}; {operation} is not possible",
                                system=SYSTEM, vendor_code=str(status))  # fmt: skip
        result = (await self.execute(mutation, {"id": node["id"]}))[operation]
        if (result or {}).get("userErrors"):
            if (await self._return_node(channel_return_id)).get("status") == target:
                return
            raise user_errors_to_exception(result["userErrors"], operation)

    # -- webhook subscriptions -----------------------------------------------------------------------

    async def list_webhook_subscriptions(self) -> list[dict[str, Any]]:
        """Every webhook subscription of this app on the store: id, topic and uri."""
        subscriptions: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = (await self.execute(WEBHOOKS_QUERY, {"first": 50, "after": after}))["webhookSubscriptions"]
            subscriptions += page["nodes"]
            if not page["pageInfo"]["hasNextPage"]:
                return subscriptions
            after = page["pageInfo"]["endCursor"]

    async def ensure_webhook_subscription(self, topic: str, url: str) -> str:
        """Subscribe a URL to a topic (`orders/create` or `ORDERS_CREATE`) unless it already is; returns its id."""
        enum = topic.upper().replace("/", "_")
        for sub in await self.list_webhook_subscriptions():
            if sub["topic"] == enum and sub["uri"] == url:
                return str(sub["id"])
        result = (
            await self.execute(
                WEBHOOK_CREATE_MUTATION, {"topic": enum, "webhookSubscription": {"uri": url, "format": "JSON"}}
            )
        )["webhookSubscriptionCreate"] or {}
        if result.get("userErrors"):
            raise user_errors_to_exception(result["userErrors"], "webhookSubscriptionCreate")
        return str(result["webhookSubscription"]["id"])

    async def delete_webhook_subscription(self, subscription_id: str) -> bool:
        """Remove a webhook subscription; False when it was already gone."""
        result = (await self.execute(WEBHOOK_DELETE_MUTATION, {"id": subscription_id}))[
            "webhookSubscriptionDelete"
        ] or {}
        return bool(result.get("deletedWebhookSubscriptionId"))


def _refund_ref(node: Mapping[str, Any], currency: str) -> ChannelRefundRef:
    amount = ((node.get("totalRefundedSet") or {}).get("shopMoney") or {}).get("amount") or "0"
    return ChannelRefundRef(
        channel_refund_id=str(node.get("legacyResourceId") or numeric_id(node["id"])),
        amount=Money(amount=Decimal(str(amount)), currency=currency),
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _is_throttled(errors: Any) -> bool:
    return isinstance(errors, list) and any(isinstance(e, Mapping) and _error_code(e) == "THROTTLED" for e in errors)

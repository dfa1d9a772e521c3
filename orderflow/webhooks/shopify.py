"""Shopify's webhooks: orders and returns start and cancel sagas; refunds made in admin are booked.

- `orders/create` starts an order's saga, `orders/cancelled` cancels it.
- `returns/request` and `returns/approve` start the return's saga (once), `returns/cancel` and
  `returns/decline` cancel it.
- `refunds/create` for a refund a person made in Shopify admin starts `ChannelRefund`, which books
  one ERP credit memo; a refund orderflow issued carries its marker and is not echoed back.

Shopify retries a failed delivery 8 times over 4 hours and then deletes the subscription, so the
service answers 2xx to everything authentic it has stored (an unknown order, another topic, a
Temporal outage) and keeps a non-2xx for what a retry or an operator can fix: 401 (a secret being
rotated), 400/422 (a body the mapping refuses; stored as rejected for `orderflow inbox replay`),
503 (the inbox's database away).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response

from orderflow import telemetry
from orderflow.adapters.errors import PermanentError, TransientError, ValidationRejectedError
from orderflow.adapters.shopify import (
    ShopifyClient,
    cancellation_from_webhook,
    order_from_webhook,
    refund_from_webhook,
    refund_issued_by_orderflow,
    return_from_webhook,
    verify_webhook,
    webhook_secrets,
)
from orderflow.canonical import Channel
from orderflow.canonical.channel_refund import ChannelRefundInput
from orderflow.canonical.return_saga import ReturnOrigin, return_key, return_to_refund_input
from orderflow.canonical.returns import Return
from orderflow.canonical.saga import SIGNAL_CANCEL, CancelRequest, CancelSource
from orderflow.settings import Settings
from orderflow.webhooks.dispatch import (
    Delivery,
    Plan,
    Rejection,
    Source,
    StartOutcome,
    TemporalGateway,
    TemporalUnavailableError,
    WebhookReceipt,
    body_digest,
    ignored,
    log,
    parse_body,
)
from orderflow.webhooks.inbox import InboxDep

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

MAPPING_ERRORS = (ValidationRejectedError, ValueError, TypeError, AttributeError, KeyError)
ORDER_TOPICS = frozenset({"orders/create", "orders/cancelled"})
RETURN_START_TOPICS = frozenset({"returns/request", "returns/approve"})
RETURN_CANCEL_TOPICS = frozenset({"returns/cancel", "returns/decline"})
REFUND_TOPIC = "refunds/create"
# Reading a return whose webhook names no SKUs: one GraphQL call from the relay.
RETURN_READ_TIMEOUT_SECONDS = 10.0


def rejection(exc: Exception) -> dict[str, Any]:
    """What a 422 tells Shopify's delivery log: the reason and, when the mapping knows it, the field."""
    if isinstance(exc, ValidationRejectedError) and isinstance(exc.details, dict):
        return {
            "reason": exc.message,
            "field": exc.details.get("field"),
            "errors": [
                {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                for e in exc.details.get("errors", [])
            ],
        }
    return {"reason": f"not a Shopify order this service can take: {exc}"}


def refused(exc: Exception) -> Rejection:
    """A 422 for a body the mapping refused, with the errors an operator reads in the inbox."""
    detail = rejection(exc)
    errors = detail.get("errors") or [
        {"loc": [detail["field"]] if detail.get("field") else [], "msg": detail["reason"]}
    ]
    return Rejection(422, detail, errors)


def verify(raw: bytes, headers: Mapping[str, str], settings: Settings) -> str | None:
    """Why a request is not signed by Shopify with our client secret (or the previous one), or None."""
    if verify_webhook(raw, headers.get("x-shopify-hmac-sha256"), webhook_secrets(settings.shopify)):
        return None
    return "X-Shopify-Hmac-Sha256 is missing or does not match the body and the client secret"


def identify(raw: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    """The topic, and `X-Shopify-Event-Id` (the documented dedupe key), else the webhook id, else the body."""
    topic = headers.get("x-shopify-topic", "")
    event_id = headers.get("x-shopify-event-id") or headers.get("x-shopify-webhook-id")
    return topic, event_id or body_digest(topic, raw)


def plan(delivery: Delivery, settings: Settings) -> Plan:
    """Map a created order to its saga's start, or a cancelled order to a cancel signal to its saga."""
    topic, event_id = delivery.topic, delivery.event_id
    shop_domain = delivery.headers.get("x-shopify-shop-domain")
    # One app's secret signs for every store it is installed on; only the configured store's orders count.
    if shop_domain and shop_domain != settings.shopify.shop_domain:
        return ignored(f"shop {shop_domain} is not the configured store {settings.shopify.shop_domain}")
    if topic not in ORDER_TOPICS | RETURN_START_TOPICS | RETURN_CANCEL_TOPICS | {REFUND_TOPIC}:
        return ignored(f"topic {topic!r} starts or changes no saga")

    try:
        payload = parse_body(delivery.body, f"Shopify {topic}")
    except ValueError as exc:
        raise Rejection(400, str(exc)) from exc
    if topic in RETURN_START_TOPICS:
        return plan_return(delivery, payload, settings)
    if topic in RETURN_CANCEL_TOPICS:
        return plan_return_cancel(delivery, payload, shop_domain)
    if topic == REFUND_TOPIC:
        return plan_refund(delivery, payload)

    if topic == "orders/create":
        try:
            order = order_from_webhook(payload)
        except MAPPING_ERRORS as exc:
            log.warning("shopify orders/create refused (event %s): %s", event_id, exc)
            raise refused(exc) from exc
        # The request's span names the order as soon as the edge knows it (one trace per order).
        telemetry.annotate_order(order_key=order.key, channel=order.channel.value)

        async def start(temporal: TemporalGateway) -> WebhookReceipt:
            outcome = await temporal.start_order(order, received_at_epoch_ms=delivery.received_at_epoch_ms)
            log.info("shopify orders/create %s (event %s): %s", order.key, event_id, outcome.value)
            if outcome is StartOutcome.DUPLICATE:
                return WebhookReceipt(
                    status="duplicate", order_keys=[order.key], reason=f"a saga for {order.key} already exists"
                )
            return WebhookReceipt(status="started", order_keys=[order.key])

        return start

    try:
        cancellation = cancellation_from_webhook(payload)
    except MAPPING_ERRORS as exc:
        raise refused(exc) from exc
    telemetry.annotate_order(order_key=cancellation.order_key, channel="shopify")
    request_cancel = CancelRequest(
        # The channel asked, so the saga compensates without cancelling on Shopify again.
        source=CancelSource.CHANNEL,
        reason=f"cancelled on Shopify ({cancellation.reason or 'no reason given'})",
        requested_by=shop_domain or "shopify",
    )

    async def cancel(temporal: TemporalGateway) -> WebhookReceipt:
        if not await temporal.signal_order(cancellation.order_key, SIGNAL_CANCEL, request_cancel):
            # Nothing to cancel; a non-2xx would only make Shopify retry for hours.
            return ignored(f"no running saga for {cancellation.order_key}")
        log.info("shopify orders/cancelled %s (event %s): cancel signalled", cancellation.order_key, event_id)
        return WebhookReceipt(status="signalled", order_keys=[cancellation.order_key])

    return cancel


def _return_id(payload: Mapping[str, Any]) -> str:
    return_id = payload.get("id")
    if isinstance(return_id, bool) or not isinstance(return_id, int | str) or not str(return_id).strip():
        raise Rejection(422, {"reason": "the return has no id", "field": "id"}, [{"loc": ["id"], "msg": "missing"}])
    return str(return_id)


def plan_return(delivery: Delivery, payload: Mapping[str, Any], settings: Settings) -> Plan:
    """Start a return's saga for a `returns/request` or `returns/approve` (the second is a duplicate start).

    Shopify's return webhooks name line items by id only. When the body carries no SKUs, the
    dispatch reads the return from the Admin API (one GraphQL call, in the relay, never before
    the answer) rather than refusing what Shopify always sends.
    """
    return_id = _return_id(payload)
    triggered = delivery.headers.get("x-shopify-triggered-at")
    requested_at = delivery.received_at
    if triggered:
        with contextlib.suppress(ValueError):
            requested_at = datetime.fromisoformat(triggered.replace("Z", "+00:00"))
    needs_lookup = False
    try:
        from_body: Return | None = return_from_webhook(payload, requested_at=requested_at)
    except ValidationRejectedError as exc:
        field = str(exc.details.get("field", "")) if isinstance(exc.details, dict) else ""
        if not field.endswith(".sku"):
            raise refused(exc) from exc
        from_body, needs_lookup = None, True
    except MAPPING_ERRORS as exc:
        raise refused(exc) from exc

    async def start(temporal: TemporalGateway) -> WebhookReceipt:
        return_request = from_body
        if needs_lookup:
            return_request = await read_return(settings, return_id)
        assert return_request is not None
        started = await temporal.start_return(
            return_to_refund_input(return_request, origin=ReturnOrigin.CHANNEL, settings=settings.returns)
        )
        log.info("shopify %s %s (event %s): %s", delivery.topic, return_request.key, delivery.event_id, started.value)
        if started is StartOutcome.DUPLICATE:
            reason = f"a saga for {return_request.key} already exists"
            return WebhookReceipt(status="duplicate", order_keys=[return_request.key], reason=reason)
        return WebhookReceipt(status="started", order_keys=[return_request.key])

    return start


async def read_return(settings: Settings, return_id: str) -> Return:
    """A return as the Admin API has it (with SKUs); a Shopify outage defers the dispatch like Temporal's."""
    async with httpx.AsyncClient(timeout=RETURN_READ_TIMEOUT_SECONDS) as http:
        try:
            return await ShopifyClient(http, settings.shopify).get_return(return_id)
        except TransientError as exc:
            raise TemporalUnavailableError(f"Shopify unavailable while reading return {return_id}: {exc}") from exc
        except PermanentError as exc:
            raise Rejection(422, f"Shopify return {return_id} cannot be read: {exc}") from exc


def plan_return_cancel(delivery: Delivery, payload: Mapping[str, Any], shop_domain: str | None) -> Plan:
    """Cancel a return's saga when the return was cancelled or declined on Shopify (before the goods came)."""
    key = return_key(Channel.SHOPIFY, _return_id(payload))
    request_cancel = CancelRequest(
        source=CancelSource.CHANNEL,
        reason=f"return {'declined' if delivery.topic == 'returns/decline' else 'cancelled'} on Shopify",
        requested_by=shop_domain or "shopify",
    )

    async def cancel(temporal: TemporalGateway) -> WebhookReceipt:
        if not await temporal.signal_saga(key, SIGNAL_CANCEL, request_cancel):
            return ignored(f"no running saga for {key}")
        return WebhookReceipt(status="signalled", order_keys=[key])

    return cancel


def plan_refund(delivery: Delivery, payload: Mapping[str, Any]) -> Plan:
    """Book a refund made in Shopify admin as one ERP credit memo; a refund orderflow issued is not echoed."""
    if refund_issued_by_orderflow(payload):
        return ignored("a refund orderflow issued itself (its note carries orderflow's marker)")
    refund_id = _return_id(payload)
    if not payload.get("transactions") and not payload.get("refund_line_items"):
        return ignored(f"refund {refund_id} moves no money and no units")
    try:
        refund = refund_from_webhook(payload)
    except MAPPING_ERRORS as exc:
        raise refused(exc) from exc
    if refund.total.amount == 0:
        return ignored(f"refund {refund_id} moves no money (a restock only): nothing to credit")
    booking = ChannelRefundInput(channel=Channel.SHOPIFY, channel_refund_id=refund_id, refund=refund)

    async def book(temporal: TemporalGateway) -> WebhookReceipt:
        started = await temporal.start_channel_refund(booking)
        log.info("shopify refunds/create %s (event %s): %s", booking.key, delivery.event_id, started.value)
        if started is StartOutcome.DUPLICATE:
            return WebhookReceipt(status="duplicate", order_keys=[booking.key], reason=f"{booking.key} exists")
        return WebhookReceipt(status="started", order_keys=[booking.key])

    return book


SOURCE = Source(
    name="shopify",
    kept_headers=frozenset(
        {
            "content-type",
            "x-shopify-topic",
            "x-shopify-event-id",
            "x-shopify-webhook-id",
            "x-shopify-shop-domain",
            "x-shopify-triggered-at",
            "x-shopify-api-version",
        }
    ),
    verify=verify,
    identify=identify,
    plan=plan,
)


@router.post("/shopify")
async def receive_shopify(request: Request, inbox: InboxDep) -> Response:
    """Verify a Shopify webhook over its raw body, store it in the inbox, then start or cancel the order's saga."""
    return await inbox.receive(request, SOURCE)

"""Shopify's webhooks: `orders/create` starts an order's saga, `orders/cancelled` cancels it.

Shopify retries a failed delivery 8 times over 4 hours and then deletes the subscription, so the
service answers 2xx to everything authentic it has stored (an unknown order, another topic, a
Temporal outage) and keeps a non-2xx for what a retry or an operator can fix: 401 (a secret being
rotated), 400/422 (a body the mapping refuses; stored as rejected for `orderflow inbox replay`),
503 (the inbox's database away).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response

from orderflow.adapters.errors import ValidationRejectedError
from orderflow.adapters.shopify import (
    cancellation_from_webhook,
    order_from_webhook,
    verify_webhook,
    webhook_secrets,
)
from orderflow.canonical.saga import SIGNAL_CANCEL, CancelRequest, CancelSource
from orderflow.settings import Settings
from orderflow.webhooks.dispatch import (
    Delivery,
    Plan,
    Rejection,
    Source,
    StartOutcome,
    TemporalGateway,
    WebhookReceipt,
    body_digest,
    ignored,
    log,
    parse_body,
)
from orderflow.webhooks.inbox import InboxDep

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

MAPPING_ERRORS = (ValidationRejectedError, ValueError, TypeError, AttributeError, KeyError)


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
    if topic not in ("orders/create", "orders/cancelled"):
        return ignored(f"topic {topic!r} starts or changes no saga")

    try:
        payload = parse_body(delivery.body, f"Shopify {topic}")
    except ValueError as exc:
        raise Rejection(400, str(exc)) from exc

    if topic == "orders/create":
        try:
            order = order_from_webhook(payload)
        except MAPPING_ERRORS as exc:
            log.warning("shopify orders/create refused (event %s): %s", event_id, exc)
            raise refused(exc) from exc

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

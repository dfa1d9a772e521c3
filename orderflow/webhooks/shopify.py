"""Shopify's webhooks: `orders/create` starts an order's saga, `orders/cancelled` cancels it.

Shopify retries a failed delivery 8 times over 4 hours and then deletes the subscription, so the
handler answers 2xx to everything authentic it cannot act on (an unknown order, another topic) and
keeps a non-2xx for what a retry can fix: 401 (a secret being rotated), 503 (Temporal away).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request

from orderflow.adapters.errors import ValidationRejectedError
from orderflow.adapters.shopify import (
    cancellation_from_webhook,
    order_from_webhook,
    verify_webhook,
    webhook_secrets,
)
from orderflow.canonical.saga import SIGNAL_CANCEL, CancelRequest, CancelSource
from orderflow.webhooks.dispatch import (
    GatewayDep,
    SettingsDep,
    StartOutcome,
    WebhookReceipt,
    ignored,
    log,
    parse_body,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


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


@router.post("/shopify")
async def receive_shopify(
    request: Request,
    settings: SettingsDep,
    temporal: GatewayDep,
    topic: Annotated[str, Header(alias="X-Shopify-Topic")] = "",
    signature: Annotated[str | None, Header(alias="X-Shopify-Hmac-Sha256")] = None,
    shop_domain: Annotated[str | None, Header(alias="X-Shopify-Shop-Domain")] = None,
    event_id: Annotated[str | None, Header(alias="X-Shopify-Event-Id")] = None,
) -> WebhookReceipt:
    """Verify a Shopify webhook over its raw body, then start or cancel the order's saga."""
    received_at_epoch_ms = time.time_ns() // 1_000_000
    raw = await request.body()
    if not verify_webhook(raw, signature, webhook_secrets(settings.shopify)):
        log.warning("shopify webhook refused: bad HMAC (shop %s, topic %s, event %s)", shop_domain, topic, event_id)
        raise HTTPException(401, "X-Shopify-Hmac-Sha256 is missing or does not match the body and the client secret")
    # One app's secret signs for every store it is installed on; only the configured store's orders count.
    if shop_domain and shop_domain != settings.shopify.shop_domain:
        return ignored(f"shop {shop_domain} is not the configured store {settings.shopify.shop_domain}")
    if topic not in ("orders/create", "orders/cancelled"):
        return ignored(f"topic {topic!r} starts or changes no saga")

    try:
        payload = parse_body(raw, f"Shopify {topic}")
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc

    if topic == "orders/create":
        try:
            order = order_from_webhook(payload)
        except (ValidationRejectedError, ValueError, TypeError, AttributeError, KeyError) as exc:
            log.warning("shopify orders/create refused (event %s): %s", event_id, exc)
            raise HTTPException(422, rejection(exc)) from exc
        outcome = await temporal.start_order(order, received_at_epoch_ms=received_at_epoch_ms)
        log.info("shopify orders/create %s (event %s): %s", order.key, event_id, outcome.value)
        if outcome is StartOutcome.DUPLICATE:
            return WebhookReceipt(
                status="duplicate", order_keys=[order.key], reason=f"a saga for {order.key} already exists"
            )
        return WebhookReceipt(status="started", order_keys=[order.key])

    try:
        cancellation = cancellation_from_webhook(payload)
    except (ValidationRejectedError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise HTTPException(422, rejection(exc)) from exc
    request_cancel = CancelRequest(
        # The channel asked, so the saga compensates without cancelling on Shopify again.
        source=CancelSource.CHANNEL,
        reason=f"cancelled on Shopify ({cancellation.reason or 'no reason given'})",
        requested_by=shop_domain or "shopify",
    )
    if not await temporal.signal_order(cancellation.order_key, SIGNAL_CANCEL, request_cancel):
        # Nothing to cancel; a non-2xx would only make Shopify retry for hours.
        return ignored(f"no running saga for {cancellation.order_key}")
    log.info("shopify orders/cancelled %s (event %s): cancel signalled", cancellation.order_key, event_id)
    return WebhookReceipt(status="signalled", order_keys=[cancellation.order_key])

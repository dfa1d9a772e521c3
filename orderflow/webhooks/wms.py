"""The warehouse's webhooks: `order.shipped` tells each order's saga which parcel left, with what.

A split order ships as several parcels; each is its own `shipment_confirmed` signal, and the saga
adds them up until every line has shipped.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request

from orderflow.adapters.wms import shipments_from_webhook, verify_webhook
from orderflow.canonical.saga import SIGNAL_SHIPMENT_CONFIRMED, ShipmentConfirmed, order_key_from_reference
from orderflow.webhooks.dispatch import GatewayDep, SettingsDep, WebhookReceipt, ignored, log, parse_body

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post("/wms")
async def receive_wms(
    request: Request,
    settings: SettingsDep,
    temporal: GatewayDep,
    topic: Annotated[str, Header(alias="x-webhook-topic")] = "",
    delivery_id: Annotated[str | None, Header(alias="webhook-id")] = None,
) -> WebhookReceipt:
    """Verify a warehouse webhook (Standard Webhooks) and signal each shipment to its order's saga."""
    raw = await request.body()
    if not verify_webhook(raw, dict(request.headers), settings.wms.webhook_secret, now=time.time()):
        log.warning("wms webhook refused: bad or stale signature (topic %s, delivery %s)", topic, delivery_id)
        raise HTTPException(401, "webhook-signature is missing, stale or does not match the body and the secret")
    if topic != "order.shipped":
        return ignored(f"topic {topic!r} changes no saga")

    try:
        shipments = shipments_from_webhook(parse_body(raw, "WMS order.shipped"))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise HTTPException(422, f"order.shipped does not describe a labelled shipment: {exc}") from exc
    if not shipments:
        raise HTTPException(422, "order.shipped carries no shipment with tracking")

    signalled: list[str] = []
    reasons: list[str] = []
    for shipment in shipments:
        key = order_key_from_reference(shipment.reference or "")
        if key is None:
            reasons.append(f"shipment {shipment.shipment_id}: {shipment.reference!r} is not an orderflow order")
        elif await temporal.signal_order(key, SIGNAL_SHIPMENT_CONFIRMED, ShipmentConfirmed(shipment=shipment)):
            log.info("wms shipment %s of %s (delivery %s): signalled", shipment.shipment_id, key, delivery_id)
            signalled.append(key)
        else:
            reasons.append(f"shipment {shipment.shipment_id}: no running saga for {key}")
    if not signalled:
        return ignored("; ".join(reasons))
    return WebhookReceipt(status="signalled", order_keys=signalled, reason="; ".join(reasons) or None)

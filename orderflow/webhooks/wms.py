"""The warehouse's webhooks: `order.shipped` tells each order's saga which parcel left, with what.

A split order ships as several parcels; each is its own `shipment_confirmed` signal, and the saga
adds them up until every line has shipped. `return.completed` tells a return's saga what came
back, per SKU, sellable or damaged (`return_received`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fastapi import APIRouter, Request, Response

from orderflow.adapters.wms import (
    RETURN_RECEIPT_TOPIC,
    return_receipt_from_webhook,
    shipments_from_webhook,
    verify_webhook,
)
from orderflow.canonical.return_saga import SIGNAL_RETURN_RECEIVED, ReturnReceived, return_key_from_reference
from orderflow.canonical.saga import SIGNAL_SHIPMENT_CONFIRMED, ShipmentConfirmed, order_key_from_reference
from orderflow.settings import Settings
from orderflow.webhooks.dispatch import (
    Delivery,
    Plan,
    Rejection,
    Source,
    TemporalGateway,
    WebhookReceipt,
    body_digest,
    ignored,
    log,
    parse_body,
)
from orderflow.webhooks.inbox import InboxDep

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def verify(raw: bytes, headers: Mapping[str, str], settings: Settings) -> str | None:
    """Why a request is not a fresh Standard Webhooks delivery signed with our secret, or None."""
    if verify_webhook(raw, dict(headers), settings.wms.webhook_secret, now=time.time()):
        return None
    return "webhook-signature is missing, stale or does not match the body and the secret"


def identify(raw: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    """The topic, and the WMS's own delivery id (`webhook-id`, which the signature covers)."""
    topic = headers.get("x-webhook-topic", "")
    return topic, headers.get("webhook-id") or body_digest(topic, raw)


def plan(delivery: Delivery, _settings: Settings) -> Plan:
    """Map an `order.shipped` to a shipment-confirmed signal per shipment, each to its order's saga."""
    if delivery.topic == RETURN_RECEIPT_TOPIC:
        return plan_return_receipt(delivery)
    if delivery.topic != "order.shipped":
        return ignored(f"topic {delivery.topic!r} changes no saga")

    try:
        shipments = shipments_from_webhook(parse_body(delivery.body, "WMS order.shipped"))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise Rejection(422, f"order.shipped does not describe a labelled shipment: {exc}") from exc
    if not shipments:
        raise Rejection(422, "order.shipped carries no shipment with tracking")

    async def confirm(temporal: TemporalGateway) -> WebhookReceipt:
        signalled: list[str] = []
        reasons: list[str] = []
        for shipment in shipments:
            key = order_key_from_reference(shipment.reference or "")
            if key is None:
                reasons.append(f"shipment {shipment.shipment_id}: {shipment.reference!r} is not an orderflow order")
            elif await temporal.signal_order(key, SIGNAL_SHIPMENT_CONFIRMED, ShipmentConfirmed(shipment=shipment)):
                log.info("wms shipment %s of %s (delivery %s): signalled", shipment.shipment_id, key, delivery.event_id)
                signalled.append(key)
            else:
                reasons.append(f"shipment {shipment.shipment_id}: no running saga for {key}")
        if not signalled:
            return ignored("; ".join(reasons))
        return WebhookReceipt(status="signalled", order_keys=signalled, reason="; ".join(reasons) or None)

    return confirm


def plan_return_receipt(delivery: Delivery) -> Plan:
    """Map a completed return to `return_received` for the return's saga, with each line's condition."""
    try:
        receipt = return_receipt_from_webhook(parse_body(delivery.body, f"WMS {RETURN_RECEIPT_TOPIC}"))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise Rejection(422, f"{RETURN_RECEIPT_TOPIC} does not describe a received return: {exc}") from exc
    key = return_key_from_reference(receipt.reference)
    if key is None:
        return ignored(f"return {receipt.wms_return_id}: {receipt.reference!r} is not an orderflow return")

    async def received(temporal: TemporalGateway) -> WebhookReceipt:
        if not await temporal.signal_saga(key, SIGNAL_RETURN_RECEIVED, ReturnReceived(receipt=receipt)):
            return ignored(f"no running saga for {key}")
        log.info("wms return %s of %s (delivery %s): received", receipt.wms_return_id, key, delivery.event_id)
        return WebhookReceipt(status="signalled", order_keys=[key])

    return received


SOURCE = Source(
    name="wms",
    kept_headers=frozenset({"content-type", "x-webhook-topic", "webhook-id", "webhook-timestamp"}),
    verify=verify,
    identify=identify,
    plan=plan,
)


@router.post("/wms")
async def receive_wms(request: Request, inbox: InboxDep) -> Response:
    """Verify a warehouse webhook (Standard Webhooks), store it, and signal each shipment to its order's saga."""
    return await inbox.receive(request, SOURCE)

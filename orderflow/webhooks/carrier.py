"""The carrier's webhooks: a tracker reaching an outcome (delivered, returned, failed) is told to its saga.

An Event names only a tracking number, so the saga is found through visibility: every saga keeps
its tracking numbers in the `TrackingNumbers` search attribute.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request

from orderflow.adapters.carrier import tracker_from_event, verify_webhook
from orderflow.canonical import TrackingStatus
from orderflow.canonical.saga import SIGNAL_DELIVERY_RECORDED, DeliveryRecorded
from orderflow.webhooks.dispatch import GatewayDep, SettingsDep, WebhookReceipt, ignored, log, parse_body

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

TRACKER_TOPICS = frozenset({"tracker.created", "tracker.updated"})
# Only a parcel's outcome is news to the saga; each scan in between would only lengthen its history.
DELIVERY_OUTCOMES = frozenset({TrackingStatus.DELIVERED, TrackingStatus.RETURN_TO_SENDER, TrackingStatus.FAILURE})


@router.post("/carrier")
async def receive_carrier(
    request: Request,
    settings: SettingsDep,
    temporal: GatewayDep,
    signature: Annotated[str | None, Header(alias="X-Hmac-Signature")] = None,
) -> WebhookReceipt:
    """Verify a carrier Event and record a tracker's outcome on the sagas shipping that tracking number."""
    raw = await request.body()
    if not verify_webhook(raw, signature, settings.carrier.webhook_secret.get_secret_value()):
        log.warning("carrier webhook refused: bad X-Hmac-Signature")
        raise HTTPException(401, "X-Hmac-Signature is missing or does not match the body and the webhook secret")
    try:
        event = parse_body(raw, "carrier Event")
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    topic = event.get("description")
    if topic not in TRACKER_TOPICS:
        return ignored(f"event {topic!r} changes no saga")

    try:
        tracker = tracker_from_event(event)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise HTTPException(422, f"{topic} does not carry a usable Tracker: {exc}") from exc
    if tracker.status not in DELIVERY_OUTCOMES:
        return ignored(f"tracker {tracker.tracking_number} is {tracker.status.value}, not a delivery outcome")
    try:
        keys = await temporal.sagas_tracking(tracker.tracking_number)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc

    recorded = DeliveryRecorded(tracking_number=tracker.tracking_number, status=tracker.status.value)
    signalled = [key for key in keys if await temporal.signal_order(key, SIGNAL_DELIVERY_RECORDED, recorded)]
    if not signalled:
        return ignored(f"no running saga ships tracking number {tracker.tracking_number}")
    log.info("carrier %s %s %s: recorded on %s", topic, tracker.tracking_number, tracker.status.value, signalled)
    return WebhookReceipt(status="signalled", order_keys=signalled)

"""The carrier's webhooks: a tracker reaching an outcome (delivered, returned, failed) is told to its saga.

An Event names only a tracking number, so the saga is found through visibility: every saga keeps
its tracking numbers in the `TrackingNumbers` search attribute.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from fastapi import APIRouter, Request, Response

from orderflow.adapters.carrier import tracker_from_event, verify_webhook
from orderflow.canonical import TrackingStatus
from orderflow.canonical.saga import SIGNAL_DELIVERY_RECORDED, DeliveryRecorded
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
    is_valid_tracking_number,
    log,
    parse_body,
)
from orderflow.webhooks.inbox import InboxDep

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

TRACKER_TOPICS = frozenset({"tracker.created", "tracker.updated"})
# Only a parcel's outcome is news to the saga; each scan in between would only lengthen its history.
DELIVERY_OUTCOMES = frozenset({TrackingStatus.DELIVERED, TrackingStatus.RETURN_TO_SENDER, TrackingStatus.FAILURE})


def verify(raw: bytes, headers: Mapping[str, str], settings: Settings) -> str | None:
    """Why a request is not an Event signed with our webhook secret, or None."""
    if verify_webhook(raw, headers.get("x-hmac-signature"), settings.carrier.webhook_secret.get_secret_value()):
        return None
    return "X-Hmac-Signature is missing or does not match the body and the webhook secret"


def identify(raw: bytes, _headers: Mapping[str, str]) -> tuple[str, str]:
    """The Event's `description` and `id`, read from its body (the carrier sends neither as a header)."""
    try:
        event = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        event = None
    if not isinstance(event, dict):
        return "", body_digest("", raw)
    topic = event.get("description")
    topic = topic if isinstance(topic, str) else ""
    event_id = event.get("id")
    if isinstance(event_id, str | int) and not isinstance(event_id, bool) and str(event_id):
        return topic[:255], str(event_id)[:255]
    return topic[:255], body_digest(topic, raw)


def plan(delivery: Delivery, _settings: Settings) -> Plan:
    """Map a tracker's delivery outcome to a signal to every saga shipping its tracking number."""
    try:
        event = parse_body(delivery.body, "carrier Event")
    except ValueError as exc:
        raise Rejection(400, str(exc)) from exc
    topic = event.get("description")
    if topic not in TRACKER_TOPICS:
        return ignored(f"event {topic!r} changes no saga")

    try:
        tracker = tracker_from_event(event)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise Rejection(422, f"{topic} does not carry a usable Tracker: {exc}") from exc
    if tracker.status not in DELIVERY_OUTCOMES:
        return ignored(f"tracker {tracker.tracking_number} is {tracker.status.value}, not a delivery outcome")
    if not is_valid_tracking_number(tracker.tracking_number):
        raise Rejection(
            422, f"tracking number {tracker.tracking_number!r} has characters a visibility query cannot hold"
        )
    recorded = DeliveryRecorded(tracking_number=tracker.tracking_number, status=tracker.status.value)

    async def record(temporal: TemporalGateway) -> WebhookReceipt:
        keys = await temporal.sagas_tracking(tracker.tracking_number)
        signalled = [key for key in keys if await temporal.signal_order(key, SIGNAL_DELIVERY_RECORDED, recorded)]
        if not signalled:
            return ignored(f"no running saga ships tracking number {tracker.tracking_number}")
        log.info("carrier %s %s %s: recorded on %s", topic, tracker.tracking_number, tracker.status.value, signalled)
        return WebhookReceipt(status="signalled", order_keys=signalled)

    return record


SOURCE = Source(
    name="carrier",
    kept_headers=frozenset({"content-type", "user-agent"}),
    verify=verify,
    identify=identify,
    plan=plan,
)


@router.post("/carrier")
async def receive_carrier(request: Request, inbox: InboxDep) -> Response:
    """Verify a carrier Event, store it, and record a tracker's outcome on the sagas shipping its number."""
    return await inbox.receive(request, SOURCE)

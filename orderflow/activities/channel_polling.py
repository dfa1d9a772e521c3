"""The channel order poller's steps on Amazon: search changed orders, start a new order's saga, signal a cancel.

This is the only module of the poller that knows Amazon: it maps the SP-API's order summaries to
channel-neutral changes, so the poller workflow and its contract never see a vendor type. Sagas
are started and signalled exactly as the webhook service does (`TemporalGateway`): one business
key, one saga, and a second start is a duplicate, not an error.
"""

from __future__ import annotations

import time

from temporalio import activity
from temporalio.client import Client

from orderflow.activities.failures import translated_failures
from orderflow.adapters.amazon import AmazonClient, AmazonOrderSummary
from orderflow.adapters.errors import ValidationRejectedError
from orderflow.canonical.channel_polling import (
    ACTIVITY_LIST_CHANGES,
    ACTIVITY_SIGNAL_CANCEL,
    ACTIVITY_START_ORDER,
    ChannelOrderChange,
    ChannelOrderChangePage,
    ChannelOrderStatus,
    FulfilledBy,
    ListChannelOrderChangesInput,
    SignalCancelInput,
    SignalCancelResult,
    StartOrderSagaInput,
    StartOrderSagaResult,
    StartOutcomeKind,
)
from orderflow.canonical.order import Channel, Order, order_key
from orderflow.canonical.saga import SIGNAL_CANCEL, TASK_QUEUE, CancelRequest, CancelSource
from orderflow.webhooks.dispatch import StartOutcome, TemporalGateway

# Order statuses, compared without case or underscores: Orders 2026-01-01 says `UNSHIPPED`, v0 `Unshipped`.
_NEW = frozenset({"UNSHIPPED"})
_CANCELLED = frozenset({"CANCELED", "CANCELLED"})
# A buyer's cancel request matters only while the order can still be stopped.
_CANCELLABLE = frozenset({"PENDING", "PENDINGAVAILABILITY", "UNSHIPPED", "PARTIALLYSHIPPED"})
POLLER = "amazon order poller"


def change_of(summary: AmazonOrderSummary) -> ChannelOrderChange:
    """An Amazon order summary as a channel-neutral change: what it asks of orderflow, and who ships it."""
    status = summary.status.upper().replace("_", "")
    if status in _CANCELLED:
        meaning = ChannelOrderStatus.CANCELLED
    elif summary.cancellation_requested and status in _CANCELLABLE:
        meaning = ChannelOrderStatus.CANCEL_REQUESTED
    elif status in _NEW:
        meaning = ChannelOrderStatus.NEW
    else:
        meaning = ChannelOrderStatus.OTHER
    return ChannelOrderChange(
        channel_order_id=summary.amazon_order_id,
        status=meaning,
        fulfilled_by=FulfilledBy.MARKETPLACE if summary.fulfillment_channel == "AFN" else FulfilledBy.MERCHANT,
        last_updated=summary.last_updated,
    )


def _require_amazon(channel: Channel) -> None:
    if channel is not Channel.AMAZON:
        raise ValidationRejectedError(
            f"the order poller's activities read Amazon, not {channel.value}",
            system=channel.value,
            vendor_code="CHANNEL_NOT_CONFIGURED",
        )


class ChannelPollingActivities:
    """The poller's steps: read Amazon's changed orders, and start or signal their sagas in Temporal."""

    def __init__(self, amazon: AmazonClient, temporal: Client, *, task_queue: str = TASK_QUEUE) -> None:
        self.amazon = amazon
        self.sagas = TemporalGateway(client=temporal, task_queue=task_queue)

    @activity.defn(name=ACTIVITY_LIST_CHANGES)
    async def list_channel_order_changes(self, input: ListChannelOrderChangesInput) -> ChannelOrderChangePage:
        """One page of the orders updated in the search window, as channel-neutral changes."""
        with translated_failures():
            _require_amazon(input.channel)
            page = await self.amazon.search_orders(
                updated_after=input.updated_after,
                updated_before=input.updated_before,
                marketplace_id=input.account_id,
                page_token=input.page,
                page_size=input.page_size,
            )
        return ChannelOrderChangePage(changes=[change_of(s) for s in page.orders], next_page=page.next_token)

    async def _merchant_order(self, channel: Channel, channel_order_id: str) -> Order | str:
        """The order as orderflow ships it, or why it is not ours to ship (fulfilled by the marketplace)."""
        with translated_failures():
            _require_amazon(channel)
            try:
                return await self.amazon.get_order(channel_order_id)
            except ValidationRejectedError as exc:
                # Fulfilled by Amazon: nothing for our warehouse to do, so it is recorded, not parked.
                if exc.vendor_code != "AFN":
                    raise
                return exc.message

    @activity.defn(name=ACTIVITY_START_ORDER)
    async def start_order_saga(self, input: StartOrderSagaInput) -> StartOrderSagaResult:
        """Read the order and start its saga; already started is a duplicate, an AFN order is skipped with why."""
        key = order_key(input.channel, input.channel_order_id)
        order = await self._merchant_order(input.channel, input.channel_order_id)
        if isinstance(order, str):
            return StartOrderSagaResult(order_key=key, outcome=StartOutcomeKind.SKIPPED, reason=order)
        outcome = await self.sagas.start_order(order, received_at_epoch_ms=int(time.time() * 1000))
        kind = StartOutcomeKind.STARTED if outcome is StartOutcome.STARTED else StartOutcomeKind.DUPLICATE
        return StartOrderSagaResult(order_key=order.key, outcome=kind)

    @activity.defn(name=ACTIVITY_SIGNAL_CANCEL)
    async def signal_cancel(self, input: SignalCancelInput) -> SignalCancelResult:
        """Signal `cancel` to the order's saga; a buyer's request for an order never started starts it cancelled.

        Amazon cancelled the order itself: the saga undoes its steps and tells Amazon nothing. The
        buyer only asked: the order stays open on Amazon until the seller cancels it, so the saga
        cancels it there (the acknowledgement feed), and an order first seen with the request is
        started with the cancel in it rather than left open on Amazon for ever.
        """
        key = order_key(input.channel, input.channel_order_id)
        source = CancelSource.BUYER if input.buyer_request else CancelSource.CHANNEL
        request = CancelRequest(reason=input.reason, source=source, requested_by=POLLER)
        if await self.sagas.signal_order(key, SIGNAL_CANCEL, request):
            return SignalCancelResult(order_key=key, signalled=True)
        if not input.buyer_request:
            return SignalCancelResult(order_key=key, signalled=False, reason="no saga running for this order")
        order = await self._merchant_order(input.channel, input.channel_order_id)
        if isinstance(order, str):
            return SignalCancelResult(order_key=key, signalled=False, reason=order)
        outcome = await self.sagas.start_order(order, received_at_epoch_ms=int(time.time() * 1000), cancel=request)
        if outcome is StartOutcome.DUPLICATE:
            return SignalCancelResult(order_key=key, signalled=False, reason="the order's saga has already ended")
        return SignalCancelResult(order_key=key, signalled=True, started=True)

"""The channel order poller: Amazon's orders, read durably, since Amazon sends no order webhooks.

A Temporal Schedule (`poll:amazon:{marketplace}`, every 2 minutes, overlap SKIP) starts one run per
tick. A run searches the orders updated from its cursor minus a look-back overlap up to a little
before now, page by page, and for each change starts the saga of a new merchant-fulfilled order
or signals `cancel` for a cancellation. Orders seen inside the overlap are remembered (id and the
update handled), so the overlap never handles the same change twice; a duplicate start would be
harmless anyway, as the saga's ID refuses it.

The cursor is durable in three ways: a run's result is the next scheduled run's
`last completion result`; a run that continues as new carries it (with the search in progress
and its page) in its input; and it only moves once a whole search is done. An outage of the
channel's API makes the search activity retry with backoff, so the run waits and the cursor stays
where it was: no order is missed. The workflow never names a channel's types; the activities map
them (orderflow/activities/channel_polling.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from orderflow.canonical.channel_polling import (
        ACTIVITY_LIST_CHANGES,
        ACTIVITY_SIGNAL_CANCEL,
        ACTIVITY_START_ORDER,
        RESYNC_WORKFLOW_TYPE,
        WORKFLOW_TYPE,
        ChannelOrderChange,
        ChannelOrderChangePage,
        ChannelOrderStatus,
        FulfilledBy,
        ListChannelOrderChangesInput,
        PollChannelOrdersInput,
        PollResult,
        ResyncChannelOrdersInput,
        ResyncChannelOrdersResult,
        SearchWindow,
        SeenChange,
        SignalCancelInput,
        SignalCancelResult,
        SkippedOrder,
        StartOrderSagaInput,
        StartOrderSagaResult,
        StartOutcomeKind,
    )
    from orderflow.workflows.order_to_cash import failure_reason

# An outage of the channel's API is waited out, however long: backing off to a minute, no attempt
# limit. The schedule skips its ticks meanwhile (overlap SKIP), and the cursor does not move.
POLL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=1)
)
ACTIVITY_TIMEOUT = timedelta(seconds=60)
# Orders of a page handled at once: each start reads the order (Amazon's getOrder: 0.5/s, burst 30),
# so a whole page at once would only queue in the adapter's rate limiter past the activity timeout.
CHANGES_AT_ONCE = 10
# Continue as new well before Temporal's own warning (10k events): a page of 100 orders is ~300 events.
HISTORY_EVENTS_LIMIT = 5_000


def remembered(seen: dict[str, SeenChange], window: SearchWindow, overlap: timedelta) -> dict[str, SeenChange]:
    """The handled changes worth keeping: only those the next window's overlap can return again.

    A search's pages are a snapshot, so an order handled on an earlier page comes back only with a
    newer update, which is handled anyway.
    """
    horizon = window.updated_before - overlap
    return {order_id: done for order_id, done in seen.items() if done.last_updated >= horizon}


@workflow.defn(name=WORKFLOW_TYPE)
class ChannelOrderPoller:
    """One poll of a channel account's changed orders: sagas started for new ones, cancels signalled."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.duplicates: list[str] = []
        self.cancels: list[str] = []
        self.skipped: list[SkippedOrder] = []
        self.failed: list[SkippedOrder] = []

    @workflow.run
    async def run(self, input: PollChannelOrdersInput) -> PollResult:
        """Search from the cursor minus the overlap, handle every change page by page, then move the cursor."""
        cursor, seen = self._resume(input)
        window = input.window
        if window is None:
            # Whole seconds: channels take and stamp times to the second, so a bound with a fraction
            # would be cut short in the request while the cursor claimed the fraction handled.
            end = (workflow.now() - input.search_lag).replace(microsecond=0)
            window = SearchWindow(updated_after=cursor - input.overlap, updated_before=end)
            if window.updated_before <= window.updated_after:
                return self._result(input, cursor, seen, pages=0)
        pages = 0
        while True:
            page: ChannelOrderChangePage = await workflow.execute_activity(
                ACTIVITY_LIST_CHANGES,
                ListChannelOrderChangesInput(
                    channel=input.channel,
                    account_id=input.account_id,
                    updated_after=window.updated_after,
                    updated_before=window.updated_before,
                    page=window.next_page,
                    page_size=input.page_size,
                ),
                result_type=ChannelOrderChangePage,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=POLL_RETRY,
            )
            await self._handle_page(input, page, seen)
            pages += 1
            if page.next_page is None:
                break
            # The page is done: only now does the search's progress move past it.
            window = window.model_copy(update={"next_page": page.next_page})
            if self._should_continue_as_new(input, pages):
                # The cursor stays: it moves only when the whole window is done.
                carried = {"cursor": cursor, "seen": remembered(seen, window, input.overlap), "window": window}
                workflow.continue_as_new(input.model_copy(update=carried))
        # The whole window is handled: the cursor moves to its end.
        cursor = max(cursor, window.updated_before)
        return self._result(input, cursor, remembered(seen, window, input.overlap), pages=pages)

    def _resume(self, input: PollChannelOrdersInput) -> tuple[datetime, dict[str, SeenChange]]:
        """Where this run starts: the input's cursor, or the last scheduled run's if that is later."""
        cursor = input.cursor
        seen = dict(input.seen)
        # A continued run carries the search it is in; the last completed run is older than that.
        if input.window is None and workflow.has_last_completion_result():
            last = workflow.get_last_completion_result(PollResult)
            if (
                isinstance(last, PollResult)
                and (last.channel, last.account_id) == (input.channel, input.account_id)
                and (cursor is None or last.cursor > cursor)
            ):
                cursor, seen = last.cursor, dict(last.seen)
        if cursor is None:
            cursor = workflow.now() - input.initial_lookback
        return cursor, seen

    def _should_continue_as_new(self, input: PollChannelOrdersInput, pages: int) -> bool:
        info = workflow.info()
        return (
            pages >= input.max_pages_per_run
            or info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= HISTORY_EVENTS_LIMIT
        )

    async def _handle_page(
        self, input: PollChannelOrdersInput, page: ChannelOrderChangePage, seen: dict[str, SeenChange]
    ) -> None:
        """Handle every change on a page not already handled; the orders of a page are independent."""
        fresh: dict[str, ChannelOrderChange] = {}
        for change in page.changes:
            handled = seen.get(change.channel_order_id)
            if handled is not None and handled.covers(change):
                continue  # seen in the overlap of an earlier run (or earlier on this search)
            earlier = fresh.get(change.channel_order_id)
            if earlier is None or change.last_updated > earlier.last_updated:
                fresh[change.channel_order_id] = change
        changes = list(fresh.values())
        outcomes: list[bool] = []
        for at in range(0, len(changes), CHANGES_AT_ONCE):
            batch = changes[at : at + CHANGES_AT_ONCE]
            outcomes += await asyncio.gather(*(self._handle(input, change) for change in batch))
        for change, done in zip(changes, outcomes, strict=True):
            # A change whose activity failed for good is not remembered, so the next overlap tries it again.
            if done:
                seen[change.channel_order_id] = SeenChange(last_updated=change.last_updated, status=change.status)

    async def _handle(self, input: PollChannelOrdersInput, change: ChannelOrderChange) -> bool:
        """Start or signal the saga a change asks for; False when it failed for good (recorded in `failed`)."""
        order_id = change.channel_order_id
        if change.status is ChannelOrderStatus.OTHER:
            return True
        if change.fulfilled_by is FulfilledBy.MARKETPLACE:
            if change.status is ChannelOrderStatus.NEW:
                self.skipped.append(SkippedOrder(channel_order_id=order_id, reason="fulfilled by the marketplace"))
            return True
        try:
            if change.status is ChannelOrderStatus.NEW:
                started: StartOrderSagaResult = await workflow.execute_activity(
                    ACTIVITY_START_ORDER,
                    StartOrderSagaInput(channel=input.channel, channel_order_id=order_id),
                    result_type=StartOrderSagaResult,
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=POLL_RETRY,
                )
                self._record_start(order_id, started)
                return True
            reason = (
                "the channel cancelled the order"
                if change.status is ChannelOrderStatus.CANCELLED
                else "the buyer asked the channel to cancel"
            )
            signalled: SignalCancelResult = await workflow.execute_activity(
                ACTIVITY_SIGNAL_CANCEL,
                SignalCancelInput(
                    channel=input.channel,
                    channel_order_id=order_id,
                    reason=reason,
                    buyer_request=change.status is ChannelOrderStatus.CANCEL_REQUESTED,
                ),
                result_type=SignalCancelResult,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=POLL_RETRY,
            )
            if signalled.started:
                self.started.append(signalled.order_key)
            if signalled.signalled:
                self.cancels.append(signalled.order_key)
            else:
                self.skipped.append(SkippedOrder(channel_order_id=order_id, reason=signalled.reason or "no saga"))
            return True
        except ActivityError as error:
            # Only a permanent failure reaches here (transient ones retry without limit): one order's
            # bad data must not stop every other order of the account, so it is reported and passed.
            _permanent, reason = failure_reason(error)
            workflow.logger.warning("order %s not handled: %s", order_id, reason)
            self.failed.append(SkippedOrder(channel_order_id=order_id, reason=reason))
            return False

    def _record_start(self, order_id: str, started: StartOrderSagaResult) -> None:
        if started.outcome is StartOutcomeKind.STARTED:
            self.started.append(started.order_key)
        elif started.outcome is StartOutcomeKind.DUPLICATE:
            self.duplicates.append(started.order_key)
        else:
            self.skipped.append(SkippedOrder(channel_order_id=order_id, reason=started.reason or "skipped"))

    def _result(
        self, input: PollChannelOrdersInput, cursor: datetime, seen: dict[str, SeenChange], *, pages: int
    ) -> PollResult:
        return PollResult(
            channel=input.channel,
            account_id=input.account_id,
            cursor=cursor,
            seen=seen,
            pages=pages,
            started=self.started,
            duplicates=self.duplicates,
            cancels_signalled=self.cancels,
            skipped=self.skipped,
            failed=self.failed,
        )


@workflow.defn(name=RESYNC_WORKFLOW_TYPE)
class ChannelOrderResync:
    """An operator's pull of named channel orders: each read and its saga started, or found already there."""

    @workflow.run
    async def run(self, input: ResyncChannelOrdersInput) -> ResyncChannelOrdersResult:
        """Start the saga of each named order once; an order that fails for good is reported, the rest go on."""
        outcomes: list[StartOrderSagaResult] = []
        failed: list[SkippedOrder] = []
        for order_id in dict.fromkeys(input.channel_order_ids):
            try:
                outcomes.append(
                    await workflow.execute_activity(
                        ACTIVITY_START_ORDER,
                        StartOrderSagaInput(channel=input.channel, channel_order_id=order_id),
                        result_type=StartOrderSagaResult,
                        start_to_close_timeout=ACTIVITY_TIMEOUT,
                        # An operator is waiting: a few tries, not an outage's patience.
                        retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5),
                    )
                )
            except ActivityError as error:
                _permanent, reason = failure_reason(error)
                failed.append(SkippedOrder(channel_order_id=order_id, reason=reason))
        return ResyncChannelOrdersResult(outcomes=outcomes, failed=failed)

"""The channel order poller's contract: its input and result, and each activity's input and result.

A channel without order webhooks (Amazon) is read by a durable poller: a workflow, started by a
Temporal Schedule, that searches the orders changed since its cursor (minus a look-back overlap),
starts a saga for each new order and signals `cancel` for each cancellation. Nothing here names a
channel's own types; the activities map the channel's orders to these shapes. The activity names
are constants so the workflow can call them without importing any channel's adapter.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import AwareDatetime, Field

from orderflow.canonical.base import CanonicalModel, NonEmptyStr
from orderflow.canonical.order import Channel

WORKFLOW_TYPE = "ChannelOrderPoller"

# Activity names, shared by the workflow, the worker and the tests' stand-ins.
ACTIVITY_LIST_CHANGES = "list_channel_order_changes"
ACTIVITY_START_ORDER = "start_order_saga"
ACTIVITY_SIGNAL_CANCEL = "signal_cancel"


def poller_schedule_id(channel: Channel, account_id: str) -> str:
    """The Temporal Schedule (and workflow id prefix) polling one channel account: `poll:amazon:{marketplace}`."""
    return f"poll:{channel.value}:{account_id}"


class ChannelOrderStatus(StrEnum):
    """What a channel order's latest change asks of orderflow."""

    NEW = "new"  # paid and waiting to be fulfilled: start its saga
    CANCEL_REQUESTED = "cancel_requested"  # the buyer asked to cancel: signal its saga
    CANCELLED = "cancelled"  # the channel cancelled it: signal its saga
    OTHER = "other"  # pending payment, shipped, ...: nothing to do


class FulfilledBy(StrEnum):
    """Who ships a channel order: orderflow's warehouse (merchant) or the marketplace itself."""

    MERCHANT = "merchant"
    MARKETPLACE = "marketplace"


class ChannelOrderChange(CanonicalModel):
    """One order the channel reports changed: its id, what the change means, who ships it, and when."""

    channel_order_id: NonEmptyStr
    status: ChannelOrderStatus
    fulfilled_by: FulfilledBy
    last_updated: AwareDatetime


class ChannelOrderChangePage(CanonicalModel):
    """A page of changed orders; `next_page` is set while the search has more."""

    changes: list[ChannelOrderChange] = []
    next_page: str | None = None


class ListChannelOrderChangesInput(CanonicalModel):
    """Search one channel account for orders updated in [updated_after, updated_before), one page."""

    channel: Channel
    account_id: NonEmptyStr
    updated_after: AwareDatetime
    updated_before: AwareDatetime
    page: str | None = None
    page_size: int = Field(default=100, ge=1, le=100)


class StartOrderSagaInput(CanonicalModel):
    """Read a channel order and start its saga under `order:{channel}:{id}`."""

    channel: Channel
    channel_order_id: NonEmptyStr


class StartOutcomeKind(StrEnum):
    """What became of a start: a new saga, one already there, or none because the order is not ours to ship."""

    STARTED = "started"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"


class StartOrderSagaResult(CanonicalModel):
    """The saga key and what became of the start; a skip says why."""

    order_key: str
    outcome: StartOutcomeKind
    reason: str | None = None


class SignalCancelInput(CanonicalModel):
    """Tell an order's saga the channel cancelled it (or the buyer asked to)."""

    channel: Channel
    channel_order_id: NonEmptyStr
    reason: NonEmptyStr
    # A buyer's request leaves the order open on the channel until the seller cancels it there; a
    # request for an order whose saga never started starts it, so the cancel reaches the channel.
    buyer_request: bool = False


class SignalCancelResult(CanonicalModel):
    """Whether a running saga got the cancel; no saga running is an outcome, not a failure."""

    order_key: str
    signalled: bool
    reason: str | None = None
    started: bool = Field(default=False, description="The saga was started with the cancel already in it")


class SearchWindow(CanonicalModel):
    """A search in progress: its bounds, and the page to read next (none before the first page)."""

    updated_after: AwareDatetime
    updated_before: AwareDatetime
    next_page: str | None = None


class SeenChange(CanonicalModel):
    """The last change of an order the poller handled: when, and what it meant.

    Channels stamp updates to the second (Amazon does), so an order placed and cancelled in the
    same second shows two changes with one time; the meaning tells them apart.
    """

    last_updated: AwareDatetime
    status: ChannelOrderStatus

    def covers(self, change: ChannelOrderChange) -> bool:
        """Whether handling this change already handled `change` (the same, or a newer update)."""
        if self.last_updated != change.last_updated:
            return self.last_updated > change.last_updated
        return self.status is change.status


class PollChannelOrdersInput(CanonicalModel):
    """One poll of a channel account; a continued run also carries the search in progress and what it has seen."""

    channel: Channel
    account_id: NonEmptyStr
    cursor: AwareDatetime | None = Field(
        default=None, description="Orders updated before this were handled; none: start `initial_lookback` back"
    )
    overlap: timedelta = Field(default=timedelta(minutes=10), description="Searched again each run, for late writes")
    initial_lookback: timedelta = timedelta(days=1)
    # The channel's search may not end closer to now than this (Amazon: 2 minutes).
    search_lag: timedelta = timedelta(minutes=2)
    page_size: int = Field(default=100, ge=1, le=100)
    max_pages_per_run: int = Field(default=20, ge=1, description="Pages before continuing as new")
    seen: dict[str, SeenChange] = Field(
        default={}, description="Order id -> the last change handled, for orders inside the overlap"
    )
    window: SearchWindow | None = Field(default=None, description="A search a continued run picks up")


class SkippedOrder(CanonicalModel):
    """An order the poller saw and deliberately left alone, with why."""

    channel_order_id: str
    reason: str


class PollResult(CanonicalModel):
    """What one run of a poll did, and the cursor and seen orders the next run (or poll) starts from."""

    channel: Channel
    account_id: str
    cursor: AwareDatetime
    seen: dict[str, SeenChange] = {}
    pages: int = 0
    started: list[str] = Field(default=[], description="Saga keys started")
    duplicates: list[str] = Field(default=[], description="Saga keys already there")
    cancels_signalled: list[str] = []
    skipped: list[SkippedOrder] = []
    failed: list[SkippedOrder] = Field(default=[], description="Orders whose start or signal failed for good")


RESYNC_WORKFLOW_TYPE = "ChannelOrderResync"


class ResyncChannelOrdersInput(CanonicalModel):
    """Pull named channel orders on demand and start the saga of each not yet started."""

    channel: Channel
    channel_order_ids: list[NonEmptyStr] = Field(min_length=1)


class ResyncChannelOrdersResult(CanonicalModel):
    """What became of each order named, in the order given."""

    outcomes: list[StartOrderSagaResult]
    failed: list[SkippedOrder] = []

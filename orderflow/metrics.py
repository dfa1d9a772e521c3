"""orderflow's business metrics, in one place: their names, their instruments, and who records them.

Three kinds, by where the number is known:

- **Saga metrics** (orders started, completed, cancelled, parked; webhook-to-ERP latency; shipment
  and inventory latency) are recorded from workflow code through `workflow.metric_meter()`. That
  meter is replay safe: the SDK drops every recording made while a workflow replays, so an order
  counted once is never counted again when its history is replayed on another worker. The values
  are workflow time (`workflow.now()`), so recording them is deterministic too.
- **Step metrics** (latency per step and system, failures by kind per system) are recorded around
  every activity by `StepMetricsInterceptor`, so no activity has to remember to.
- **Webhook service metrics** (requests by source, topic and outcome; the inbox backlog and the age
  of its oldest pending row) live in a `prometheus_client` registry of that service
  (`WebhookMetrics`).

The worker's saga and step metrics are exported by Temporal's runtime (`worker_runtime`) next to
the SDK's own `temporal_*` metrics. `docs/operations.md` ("Metrics and alerts") lists every metric
with the alert to set on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from orderflow.adapters.errors import AdapterError, PermanentError, RateLimitedError

if TYPE_CHECKING:
    from orderflow.store.db import Database

log = logging.getLogger(__name__)

# --- Names (every metric orderflow exports; docs/operations.md lists them with their alerts) ---------------------
# Counters get `_total` appended on export, by Temporal's runtime (`counters_total_suffix`) and by
# prometheus_client alike, so the names below are the names without it.
ORDERS_STARTED = "orderflow_orders_started"
ORDERS_COMPLETED = "orderflow_orders_completed"
ORDERS_CANCELLED = "orderflow_orders_cancelled"
ORDERS_PARKED = "orderflow_orders_parked"
ORDERS_RESUMED = "orderflow_orders_resumed"
WEBHOOK_TO_ERP_SECONDS = "orderflow_webhook_to_erp_seconds"
SHIPMENT_TO_CHANNEL_SECONDS = "orderflow_shipment_to_channel_seconds"
INVENTORY_PUBLISH_LAG_SECONDS = "orderflow_inventory_publish_lag_seconds"
STEP_SECONDS = "orderflow_step_seconds"
STEP_FAILURES = "orderflow_step_failures"
WEBHOOK_REQUESTS = "orderflow_webhook_requests"
INBOX_BACKLOG = "orderflow_inbox_backlog"
INBOX_OLDEST_PENDING_AGE_SECONDS = "orderflow_inbox_oldest_pending_age_seconds"
INBOX_BACKLOG_READ_OK = "orderflow_inbox_backlog_read_ok"

# Buckets in seconds. A step is one HTTP call or a few (sub-second), but a throttled or slow vendor
# stretches it to a minute; webhook-to-ERP spans a whole credit check and allocation, and an order
# parked on the way counts its hours, hence the long tail.
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ACCEPTANCE_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 14400.0)
HISTOGRAM_BUCKETS: dict[str, Sequence[float]] = {
    STEP_SECONDS: STEP_BUCKETS,
    WEBHOOK_TO_ERP_SECONDS: ACCEPTANCE_BUCKETS,
    SHIPMENT_TO_CHANNEL_SECONDS: ACCEPTANCE_BUCKETS,
    INVENTORY_PUBLISH_LAG_SECONDS: ACCEPTANCE_BUCKETS,
}


def worker_runtime(metrics_bind: str | None) -> Runtime:
    """The Temporal runtime of a worker: SDK and saga metrics served as Prometheus text on `metrics_bind`.

    Without a bind address it is the default runtime, whose meters record nothing. Every client
    made on this runtime (and so its workers) reports through it. In the worker process make it the
    default (`Runtime.set_default(runtime, error_if_already_set=False)`) before the first client is
    made: with temporalio 1.35 a process whose clients ran on a non-default runtime was seen to
    abort at interpreter exit (`PyGILState_Release`), which the default runtime does not.
    Tests, which share a process, pass it to `Client.connect(runtime=...)` instead.
    """
    if metrics_bind is None:
        return Runtime.default()
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=metrics_bind,
                # The Prometheus conventions, so the worker's names read like the webhook service's.
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides=HISTOGRAM_BUCKETS,
            )
        )
    )


# --- Saga metrics: call these from workflow code only -----------------------------------------------------------


def _saga_meter() -> Any:
    # Replay safe: the SDK's workflow meter records nothing while the workflow replays.
    return workflow.metric_meter()


def order_started(channel: str) -> None:
    """Count an order saga that began (once per order: a replay records nothing)."""
    _saga_meter().create_counter(ORDERS_STARTED, "Order sagas started").add(1, {"channel": channel})


def order_status_changed(channel: str, status: str) -> None:
    """Count an order reaching a final status: COMPLETED or CANCELLED (other statuses are not counted)."""
    name = {"COMPLETED": ORDERS_COMPLETED, "CANCELLED": ORDERS_CANCELLED}.get(status)
    if name is not None:
        _saga_meter().create_counter(name, f"Order sagas {status.lower()}").add(1, {"channel": channel})


def order_parked(channel: str, step: str) -> None:
    """Count an order parked for an operator (needs attention) at a step."""
    _saga_meter().create_counter(ORDERS_PARKED, "Orders parked for an operator").add(
        1, {"channel": channel, "step": step}
    )


def order_resumed(channel: str, step: str, action: str) -> None:
    """Count a parked order an operator moved on (`retry`, `skip`, `cancel`, `approve-credit`)."""
    _saga_meter().create_counter(ORDERS_RESUMED, "Parked orders an operator moved on").add(
        1, {"channel": channel, "step": step, "action": action}
    )


def _since(moment: datetime) -> timedelta:
    # Workflow time, so the value is the same on every worker that could run this task; never
    # negative, since the channel's clock (received_at, shipped_at) may run ahead of Temporal's.
    return max(timedelta(0), workflow.now() - moment)


def order_posted_to_erp(channel: str, received_at_epoch_ms: int | None) -> None:
    """Record the order acceptance time: from the channel's webhook arriving to the sales order in the ERP."""
    if received_at_epoch_ms is None:
        return  # started by an operator or a test, not a webhook: there is nothing to measure from
    received = datetime.fromtimestamp(received_at_epoch_ms / 1000, UTC)
    _saga_meter().create_histogram_timedelta(
        WEBHOOK_TO_ERP_SECONDS, "From the channel's webhook to the sales order posted in the ERP", "s"
    ).record(_since(received), {"channel": channel})


def shipment_confirmed_on_channel(channel: str, shipped_at: datetime) -> None:
    """Record the shipment event latency: from the parcel leaving the warehouse to the channel knowing."""
    _saga_meter().create_histogram_timedelta(
        SHIPMENT_TO_CHANNEL_SECONDS, "From a parcel leaving the warehouse to its tracking on the channel", "s"
    ).record(_since(shipped_at), {"channel": channel})


def inventory_published(stock_moved_at: datetime) -> None:
    """Record the inventory update lag: from a saga moving stock to the channels' availability being set."""
    _saga_meter().create_histogram_timedelta(
        INVENTORY_PUBLISH_LAG_SECONDS, "From a saga moving stock to the channels' sellable quantity set", "s"
    ).record(_since(stock_moved_at))


# --- Step metrics: an activity interceptor ----------------------------------------------------------------------

# The system each activity class talks to. Channel classes say "channel": the input names which one.
SYSTEM_BY_ACTIVITY_CLASS: dict[str, str] = {
    "ErpActivities": "netsuite",
    "ReturnErpActivities": "netsuite",
    "ChannelRefundActivities": "netsuite",
    "WarehouseActivities": "wms",
    "ReturnWarehouseActivities": "wms",
    "CarrierActivities": "carrier",
    "ReturnCarrierActivities": "carrier",
    "ChannelActivities": "channel",
    "ReturnChannelActivities": "channel",
    "ChannelPollingActivities": "channel",
    # It reads the warehouse, but what it exists for (and is throttled by) is Amazon's listings API.
    "AvailabilityActivities": "amazon",
    # orderflow's own database: its latency is ours, not a vendor's.
    "OrderViewActivities": "orderflow",
}
UNKNOWN_SYSTEM = "other"


def _channel_of(args: Sequence[Any]) -> str | None:
    for arg in args[:1]:
        channel = getattr(arg, "channel", None) or getattr(getattr(arg, "order", None), "channel", None)
        if channel is not None:
            return str(getattr(channel, "value", channel))
    return None


def system_of(
    fn: Callable[..., Any], args: Sequence[Any], systems: Mapping[str, str] = SYSTEM_BY_ACTIVITY_CLASS
) -> str:
    """The external system an activity talks to, from its class (and, for a channel step, its input's channel)."""
    owner = getattr(fn, "__self__", None)
    name = type(owner).__name__ if owner is not None else getattr(fn, "__qualname__", "").partition(".")[0]
    system = systems.get(name, UNKNOWN_SYSTEM)
    if system == "channel":
        return _channel_of(args) or "channel"
    return system


def failure_kind(error: BaseException) -> str:
    """How a failed attempt will be treated: `permanent` (parks the saga), `rate_limited` or `retryable`."""
    adapter_error = error if isinstance(error, AdapterError) else error.__cause__
    if isinstance(error, ApplicationError):
        if error.non_retryable:
            return "permanent"
        if isinstance(adapter_error, RateLimitedError) or error.type == RateLimitedError.__name__:
            return "rate_limited"
        return "retryable"
    if isinstance(adapter_error, PermanentError):
        return "permanent"
    if isinstance(adapter_error, RateLimitedError):
        return "rate_limited"
    return "retryable"


def failure_system(error: BaseException) -> str | None:
    """The system an activity's failure names (activities put it in the error's details), if any."""
    if isinstance(error, AdapterError):
        return error.system
    if isinstance(error, ApplicationError) and error.details:
        first = error.details[0]
        if isinstance(first, Mapping) and isinstance(first.get("system"), str):
            return str(first["system"])
    return None


class _StepMetrics(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, systems: Mapping[str, str]) -> None:
        super().__init__(next)
        self.systems = systems

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        system = system_of(input.fn, input.args, self.systems)
        started = time.monotonic()
        outcome = "ok"
        try:
            return await super().execute_activity(input)
        except asyncio.CancelledError:
            # Cancelled by the saga or a shutting-down worker: not the vendor's failure.
            outcome = "cancelled"
            raise
        except BaseException as error:
            outcome = failure_kind(error)
            # A failure names the system that failed (a label step reads the WMS, too): count it there.
            _record_failure(failure_system(error) or system, outcome)
            raise
        finally:
            _record_step(system, outcome, time.monotonic() - started)


def _record_step(system: str, outcome: str, seconds: float) -> None:
    try:
        meter = activity.metric_meter()
    except RuntimeError:
        return  # a synchronous activity in another process has no meter; orderflow has none today
    meter.create_histogram_timedelta(STEP_SECONDS, "One attempt of a saga step (an activity)", "s").record(
        timedelta(seconds=seconds), {"system": system, "outcome": outcome}
    )


def _record_failure(system: str, kind: str) -> None:
    try:
        meter = activity.metric_meter()
    except RuntimeError:
        return
    meter.create_counter(STEP_FAILURES, "Failed attempts of saga steps, by system and kind").add(
        1, {"system": system, "kind": kind}
    )


class StepMetricsInterceptor(Interceptor):
    """Times every activity attempt per step and system, and counts failures by kind (retries, throttles)."""

    def __init__(self, systems: Mapping[str, str] = SYSTEM_BY_ACTIVITY_CLASS) -> None:
        self.systems = systems

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap an activity's execution with the step metrics."""
        return _StepMetrics(next, self.systems)


# --- Webhook service metrics (prometheus_client) ----------------------------------------------------------------


@dataclass(frozen=True)
class PendingBySource:
    """The inbox's pending rows of one source: how many, and when the oldest arrived."""

    count: int
    oldest: datetime


async def read_pending(database: Database) -> dict[str, PendingBySource]:
    """The inbox's pending rows per source: one grouped query on the indexed status column."""
    # Imported here: the sagas import this module for their counters, and workflow code keeps
    # SQLAlchemy out of its imports (DESIGN.md §2).
    from sqlalchemy import func, select

    from orderflow.store.inbox import InboxEvent, InboxStatus, aware

    query = (
        select(InboxEvent.source, func.count(), func.min(InboxEvent.received_at))
        .where(InboxEvent.status == InboxStatus.PENDING.value)
        .group_by(InboxEvent.source)
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    return {str(source): PendingBySource(int(count), aware(oldest)) for source, count, oldest in rows}


class InboxBacklog(Collector):
    """The inbox backlog and the age of its oldest pending row, per source, for the webhook service's `/metrics`.

    prometheus_client collects synchronously, and the database is asynchronous, so the rows are
    read by `refresh()`, which the `/metrics` route awaits before rendering: on scrape, not from the
    relay loop, so the value is as fresh as the scrape and a stalled relay (the very thing this
    alerts on) cannot freeze it. The read has a short timeout; when it fails the last reading is
    kept, `orderflow_inbox_backlog_read_ok` drops to 0, and the age keeps growing from the last
    known oldest row, because age is computed at collection time.
    """

    def __init__(
        self, database: Database, *, timeout: float = 1.0, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.database = database
        self.timeout = timeout
        self.clock = clock or (lambda: datetime.now(UTC))
        self.pending: dict[str, PendingBySource] = {}
        # Sources once seen keep reporting (0 when drained), so a drained backlog reads 0, not "absent".
        self.sources: set[str] = set()
        self.read_ok = False

    async def refresh(self) -> None:
        """Read the pending rows now (bounded by the timeout); on failure keep the last reading."""
        try:
            async with asyncio.timeout(self.timeout):
                pending = await read_pending(self.database)
        except Exception as exc:  # the database down or slow: report the stale reading, flagged
            log.warning("inbox backlog not read: %s: %s", exc.__class__.__name__, exc)
            self.read_ok = False
            return
        self.pending = pending
        self.sources |= set(pending)
        self.read_ok = True

    def collect(self) -> Iterable[Metric]:
        """The last reading as Prometheus gauges."""
        now = self.clock()
        backlog = GaugeMetricFamily(INBOX_BACKLOG, "Inbox rows waiting to be dispatched", labels=["source"])
        age = GaugeMetricFamily(
            INBOX_OLDEST_PENDING_AGE_SECONDS, "Age of the oldest inbox row waiting to be dispatched", labels=["source"]
        )
        for source in sorted(self.sources):
            row = self.pending.get(source)
            backlog.add_metric([source], row.count if row else 0)
            age.add_metric([source], max(0.0, (now - row.oldest).total_seconds()) if row else 0.0)
        yield backlog
        yield age
        yield GaugeMetricFamily(
            INBOX_BACKLOG_READ_OK, "1 when the last read of the inbox backlog succeeded", value=int(self.read_ok)
        )


# What became of a webhook request, as the counter's `outcome` label says it.
WEBHOOK_OUTCOMES = (
    "accepted",  # stored pending; the relay dispatches it
    "duplicate",  # a redelivery, or the same order under a new event id
    "ignored",  # stored, nothing to do (a topic orderflow does not act on)
    "rejected",  # stored as rejected: unparseable or invalid body (400/422)
    "failed",  # stored as failed: a mapping bug, for an operator to replay
    "bad_signature",  # not stored (401)
    "too_large",  # not stored (413)
    "overloaded",  # shed with a 503 before reading
    "storage_unavailable",  # the database could not take the write (503)
)


class WebhookMetrics:
    """The webhook service's metrics: a registry of its own with requests by outcome and the inbox backlog."""

    def __init__(self, database: Database | None = None, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if registry is None:
            # The process's own health (memory, CPU, file descriptors), as a default registry would have.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.requests = Counter(
            WEBHOOK_REQUESTS,
            "Webhook requests received, by source, topic and what became of them",
            ["source", "topic", "outcome"],
            registry=self.registry,
        )
        self.backlog = InboxBacklog(database) if database is not None else None
        if self.backlog is not None:
            self.registry.register(self.backlog)

    def webhook_request(self, source: str, topic: str, outcome: str) -> None:
        """Count one webhook request and what became of it (one of `WEBHOOK_OUTCOMES`)."""
        # The topic comes from the request: an unknown one is bounded so a sender cannot blow up the series.
        self.requests.labels(source, topic[:64] or "unknown", outcome).inc()

    async def refresh(self) -> None:
        """Bring the scrape-time readings (the inbox backlog) up to date; the `/metrics` route awaits this."""
        if self.backlog is not None:
            await self.backlog.refresh()

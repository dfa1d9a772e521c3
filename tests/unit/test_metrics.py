"""Business metrics as Prometheus sees them: saga counters, step latency and failures, the inbox backlog.

The saga and step metrics go through a real worker on the dev server, on a Temporal runtime that
serves Prometheus text on a loopback port; the tests scrape that port over HTTP, as Prometheus would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

# The sandbox imports this module again for its workflows: everything else passes through.
with workflow.unsafe.imports_passed_through():
    import httpx
    import pytest
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from pydantic import BaseModel
    from support.temporal import free_port
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.runtime import Runtime
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Replayer, Worker

    from orderflow import metrics
    from orderflow.activities.failures import translated_failures
    from orderflow.adapters.errors import RateLimitedError, TransientError, ValidationRejectedError
    from orderflow.canonical import Channel
    from orderflow.store import inbox
    from orderflow.store.db import Database


def sample(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called `name` whose labels include `labels`; None when there is none."""
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(found) if found else None


async def scrape_until(url: str, name: str, expected: float, **labels: str) -> str:
    """Scrape until the sample reads `expected` (the runtime exports asynchronously), then the whole text."""
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            text = (await http.get(url)).text
            if sample(text, name, **labels) == expected or time.monotonic() > deadline:
                return text
            await asyncio.sleep(0.1)


class MeteredRuntime:
    """A Temporal runtime exporting Prometheus on a loopback port, and a client on it."""

    def __init__(self, runtime: Runtime, client: Client, url: str) -> None:
        self.runtime = runtime
        self.client = client
        self.url = url


@pytest.fixture(scope="module")
async def metered(dev_server: WorkflowEnvironment) -> AsyncIterator[MeteredRuntime]:
    """A client of the dev server on a runtime of its own whose metrics are served at `url`."""
    bind = f"127.0.0.1:{free_port()}"
    runtime = metrics.worker_runtime(bind)
    client = await Client.connect(
        dev_server.client.service_client.config.target_host,
        namespace=dev_server.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    yield MeteredRuntime(runtime, client, f"http://{bind}/metrics")


# --- The sagas' counters ------------------------------------------------------------------------------------------


class SagaRun(BaseModel):
    """What the stand-in saga goes through: its channel, where it parks, how it ends."""

    channel: str
    received_at_epoch_ms: int | None
    shipped_at: datetime
    final_status: str


@workflow.defn
class MeteredSaga:
    """Goes through an order's metered moments as the real sagas do, in workflow code."""

    @workflow.run
    async def run(self, run: SagaRun) -> str:
        metrics.order_started(run.channel)
        metrics.order_posted_to_erp(run.channel, run.received_at_epoch_ms)
        metrics.order_parked(run.channel, "allocate")
        await workflow.sleep(timedelta(milliseconds=10))
        metrics.order_resumed(run.channel, "allocate", "retry")
        metrics.order_status_changed(run.channel, "POSTED")  # not a final status: counted nowhere
        metrics.shipment_confirmed_on_channel(run.channel, run.shipped_at)
        metrics.order_status_changed(run.channel, run.final_status)
        return run.final_status


async def test_saga_counters_count_each_order_once_per_channel_and_not_on_replay(metered: MeteredRuntime) -> None:
    queue = f"metrics-{uuid.uuid4()}"
    now_ms = int(time.time() * 1000)
    runs = [
        SagaRun(
            channel="shopify",
            received_at_epoch_ms=now_ms - 3000,
            shipped_at=datetime.now(UTC) - timedelta(seconds=40),
            final_status="COMPLETED",
        ),
        SagaRun(channel="shopify", received_at_epoch_ms=None, shipped_at=datetime.now(UTC), final_status="COMPLETED"),
        SagaRun(channel="amazon", received_at_epoch_ms=now_ms, shipped_at=datetime.now(UTC), final_status="CANCELLED"),
    ]
    handles = []
    async with Worker(metered.client, task_queue=queue, workflows=[MeteredSaga]):
        for run in runs:
            handle = await metered.client.start_workflow(
                MeteredSaga.run, run, id=f"order:{run.channel}:{uuid.uuid4()}", task_queue=queue
            )
            handles.append(handle)
        assert [await handle.result() for handle in handles] == ["COMPLETED", "COMPLETED", "CANCELLED"]

    q = {"task_queue": queue}
    text = await scrape_until(metered.url, "orderflow_orders_cancelled_total", 1, channel="amazon", **q)
    assert sample(text, "orderflow_orders_started_total", channel="shopify", **q) == 2
    assert sample(text, "orderflow_orders_started_total", channel="amazon", **q) == 1
    assert sample(text, "orderflow_orders_completed_total", channel="shopify", **q) == 2
    assert sample(text, "orderflow_orders_completed_total", channel="amazon", **q) is None
    assert sample(text, "orderflow_orders_cancelled_total", channel="amazon", **q) == 1
    assert sample(text, "orderflow_orders_parked_total", channel="shopify", step="allocate", **q) == 2
    assert sample(text, "orderflow_orders_resumed_total", channel="amazon", step="allocate", action="retry", **q) == 1
    # Acceptance time: measured only from a webhook's arrival (the second Shopify order had none).
    assert sample(text, "orderflow_webhook_to_erp_seconds_count", channel="shopify", **q) == 1
    accepted = sample(text, "orderflow_webhook_to_erp_seconds_sum", channel="shopify", **q)
    assert accepted is not None and 3 <= accepted < 30
    assert sample(text, "orderflow_webhook_to_erp_seconds_bucket", channel="shopify", le="2", **q) == 0
    assert sample(text, "orderflow_webhook_to_erp_seconds_bucket", channel="shopify", le="30", **q) == 1
    shipped = sample(text, "orderflow_shipment_to_channel_seconds_sum", channel="shopify", **q)
    assert shipped is not None and 40 <= shipped < 60

    # Replaying a history (what another worker does after a restart) records nothing again.
    replayer = Replayer(workflows=[MeteredSaga], data_converter=pydantic_data_converter, runtime=metered.runtime)
    await replayer.replay_workflow(await handles[0].fetch_history())
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(timeout=5) as http:
        after = (await http.get(metered.url)).text
    assert sample(after, "orderflow_orders_started_total", channel="shopify", **q) == 2
    assert sample(after, "orderflow_webhook_to_erp_seconds_count", channel="shopify", **q) == 1


# --- Step latency and failures per system ---------------------------------------------------------------------


class ChannelCall(BaseModel):
    """A channel step's input: like the real ones, it names its channel."""

    channel: Channel


class StandInErp:
    """ERP steps that fail as NetSuite does: once down, once throttled, then fine; and a refusal."""

    @activity.defn(name="metered_post_sales_order")
    async def post_sales_order(self, order_key: str) -> str:
        """Post, failing on the first two attempts."""
        with translated_failures():
            if activity.info().attempt == 1:
                raise TransientError("service unavailable", system="netsuite", status_code=503)
            if activity.info().attempt == 2:
                raise RateLimitedError("concurrency limit", system="netsuite", status_code=429, retry_after=0.05)
        return f"SO-{order_key}"

    @activity.defn(name="metered_accept_order")
    async def accept_order(self, order_key: str) -> str:
        """Refuse the order as NetSuite refuses an unknown item."""
        with translated_failures():
            raise ValidationRejectedError(f"{order_key}: unknown item", system="netsuite", status_code=400)


class StandInChannel:
    """A channel step: which system it talks to is in its input."""

    @activity.defn(name="metered_confirm_shipment")
    async def confirm_shipment(self, call: ChannelCall) -> str:
        """Confirm, at once."""
        return call.channel.value


@workflow.defn
class MeteredSteps:
    """Runs a flaky ERP step, a refused one, and a channel step."""

    @workflow.run
    async def run(self, order_key: str) -> list[str]:
        quick = RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=5)
        timeout = timedelta(seconds=10)
        posted = await workflow.execute_activity_method(
            StandInErp.post_sales_order, order_key, start_to_close_timeout=timeout, retry_policy=quick
        )
        try:
            await workflow.execute_activity_method(
                StandInErp.accept_order, order_key, start_to_close_timeout=timeout, retry_policy=quick
            )
            refused = "accepted"
        except ActivityError as error:
            assert isinstance(error.cause, ApplicationError)
            refused = error.cause.type or "?"
        channel = await workflow.execute_activity_method(
            StandInChannel.confirm_shipment, ChannelCall(channel=Channel.AMAZON), start_to_close_timeout=timeout
        )
        return [posted, refused, channel]


async def test_steps_are_timed_per_system_and_failures_counted_by_kind(metered: MeteredRuntime) -> None:
    queue = f"metrics-{uuid.uuid4()}"
    systems = {**metrics.SYSTEM_BY_ACTIVITY_CLASS, "StandInErp": "netsuite", "StandInChannel": "channel"}
    erp, channel = StandInErp(), StandInChannel()
    async with Worker(
        metered.client,
        task_queue=queue,
        workflows=[MeteredSteps],
        activities=[erp.post_sales_order, erp.accept_order, channel.confirm_shipment],
        interceptors=[metrics.StepMetricsInterceptor(systems)],
    ):
        result = await metered.client.execute_workflow(
            MeteredSteps.run, "1042", id=f"steps-{uuid.uuid4()}", task_queue=queue
        )
    assert result == ["SO-1042", "ValidationRejectedError", "amazon"]

    q = {"task_queue": queue}
    failures = "orderflow_step_failures_total"
    text = await scrape_until(metered.url, failures, 1, kind="permanent", **q)
    post = {"activity_type": "metered_post_sales_order", "system": "netsuite", **q}
    assert sample(text, failures, kind="retryable", **post) == 1
    assert sample(text, failures, kind="rate_limited", **post) == 1
    assert sample(text, failures, kind="permanent", activity_type="metered_accept_order", system="netsuite", **q) == 1
    assert sample(text, failures, system="amazon", **q) is None
    # Every attempt is timed, labelled with how it ended.
    assert sample(text, "orderflow_step_seconds_count", outcome="retryable", **post) == 1
    assert sample(text, "orderflow_step_seconds_count", outcome="rate_limited", **post) == 1
    assert sample(text, "orderflow_step_seconds_count", outcome="ok", **post) == 1
    confirm = {"activity_type": "metered_confirm_shipment", **q}
    assert sample(text, "orderflow_step_seconds_count", system="amazon", outcome="ok", **confirm) == 1
    seconds = sample(text, "orderflow_step_seconds_sum", system="amazon", **confirm)
    assert seconds is not None and 0 <= seconds < 5
    # The runtime's own SDK metrics are on the same endpoint.
    assert sample(text, "temporal_activity_execution_failed_total", activity_type="metered_accept_order", **q) == 1


def test_the_system_of_a_step_comes_from_its_class_and_a_channel_steps_input() -> None:
    from orderflow.activities.channel import ChannelActivities
    from orderflow.activities.erp import ErpActivities
    from orderflow.activities.warehouse import WarehouseActivities

    amazon_call = ChannelCall(channel=Channel.AMAZON)
    assert metrics.system_of(ErpActivities.accept_order, [amazon_call]) == "netsuite"
    assert metrics.system_of(WarehouseActivities.allocate, []) == "wms"
    assert metrics.system_of(ChannelActivities.confirm_shipment_on_channel, [amazon_call]) == "amazon"
    assert metrics.system_of(ChannelActivities.cancel_on_channel, []) == "channel"
    assert metrics.system_of(StandInErp().post_sales_order, []) == metrics.UNKNOWN_SYSTEM


# --- The inbox backlog --------------------------------------------------------------------------------------------


async def test_the_inbox_backlog_reports_pending_rows_and_the_oldest_ones_age(database: Database) -> None:
    now = datetime.now(UTC)
    for event_id, source, minutes_ago, status in [
        ("a1", "shopify", 12, inbox.InboxStatus.PENDING),
        ("a2", "shopify", 3, inbox.InboxStatus.PENDING),
        ("a3", "shopify", 30, inbox.InboxStatus.DISPATCHED),  # older, but settled: not backlog
        ("b1", "wms", 1, inbox.InboxStatus.PENDING),
        ("c1", "carrier", 50, inbox.InboxStatus.IGNORED),
    ]:
        await inbox.receive(
            database,
            source=source,
            event_id=event_id,
            topic="orders/create",
            headers={},
            body=b"{}",
            received_at=now - timedelta(minutes=minutes_ago),
            status=status,
        )
    webhook_metrics = metrics.WebhookMetrics(database)
    assert webhook_metrics.backlog is not None
    webhook_metrics.backlog.clock = lambda: now
    await webhook_metrics.refresh()
    text = generate_latest(webhook_metrics.registry).decode()

    assert sample(text, "orderflow_inbox_backlog", source="shopify") == 2
    assert sample(text, "orderflow_inbox_backlog", source="wms") == 1
    assert sample(text, "orderflow_inbox_backlog", source="carrier") is None
    assert sample(text, "orderflow_inbox_oldest_pending_age_seconds", source="shopify") == pytest.approx(12 * 60)
    assert sample(text, "orderflow_inbox_oldest_pending_age_seconds", source="wms") == pytest.approx(60)
    assert sample(text, "orderflow_inbox_backlog_read_ok") == 1

    # Drained: the source reads 0 rather than vanishing. The database then gone: the last reading
    # stays, flagged, and the age of what was pending keeps growing.
    pending = await inbox.claim_pending(database, attempted_before=now)
    await inbox.settle_all(database, [inbox.Settlement(row.id, inbox.InboxStatus.DISPATCHED) for row in pending])
    await inbox.receive(
        database, source="wms", event_id="b2", topic="order.shipped", headers={}, body=b"{}", received_at=now
    )
    await webhook_metrics.refresh()
    text = generate_latest(webhook_metrics.registry).decode()
    assert sample(text, "orderflow_inbox_backlog", source="shopify") == 0
    assert sample(text, "orderflow_inbox_oldest_pending_age_seconds", source="shopify") == 0
    assert sample(text, "orderflow_inbox_backlog", source="wms") == 1

    await database.dispose()
    webhook_metrics.backlog.database = Database("postgresql://nobody@127.0.0.1:1/none")
    webhook_metrics.backlog.clock = lambda: now + timedelta(minutes=5)
    await webhook_metrics.refresh()
    text = generate_latest(webhook_metrics.registry).decode()
    assert sample(text, "orderflow_inbox_backlog_read_ok") == 0
    assert sample(text, "orderflow_inbox_backlog", source="wms") == 1
    assert sample(text, "orderflow_inbox_oldest_pending_age_seconds", source="wms") == pytest.approx(5 * 60)


def test_webhook_requests_are_counted_by_source_topic_and_outcome() -> None:
    webhook_metrics = metrics.WebhookMetrics()
    webhook_metrics.webhook_request("shopify", "orders/create", "accepted")
    webhook_metrics.webhook_request("shopify", "orders/create", "accepted")
    webhook_metrics.webhook_request("shopify", "orders/create", "duplicate")
    webhook_metrics.webhook_request("wms", "", "bad_signature")
    text = generate_latest(webhook_metrics.registry).decode()
    requests = "orderflow_webhook_requests_total"
    assert sample(text, requests, source="shopify", topic="orders/create", outcome="accepted") == 2
    assert sample(text, requests, source="shopify", topic="orders/create", outcome="duplicate") == 1
    assert sample(text, requests, source="wms", topic="unknown", outcome="bad_signature") == 1
    assert sample(text, "process_cpu_seconds_total") is not None

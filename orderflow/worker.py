"""The worker: the one place that builds the adapters from settings and runs the sagas' code.

One `httpx.AsyncClient` is shared by every adapter, so connections to each vendor are pooled and
reused across activities; its pool is sized for the number of activities the worker runs at once.
How much a worker takes on (activities, workflow tasks, cached sagas) and its stop grace are the
`worker` settings (ORDERFLOW_WORKER__...); `orderflow worker --processes N` runs N of these processes.
With tracing on (`orderflow.telemetry`), the worker's workflows and activities join each order's
trace, and every request of that client is a span of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from orderflow import telemetry
from orderflow.activities import CarrierActivities, ChannelActivities, ErpActivities, WarehouseActivities
from orderflow.activities.availability import AvailabilityActivities
from orderflow.activities.channel_polling import ChannelPollingActivities
from orderflow.activities.channel_refunds import ChannelRefundActivities
from orderflow.activities.order_view import OrderViewActivities
from orderflow.activities.returns import (
    ReturnCarrierActivities,
    ReturnChannelActivities,
    ReturnErpActivities,
    ReturnWarehouseActivities,
)
from orderflow.adapters.amazon import AmazonClient
from orderflow.adapters.carrier import CarrierClient
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.adapters.shopify import ShopifyClient
from orderflow.adapters.wms import WmsClient
from orderflow.canonical import Channel
from orderflow.canonical.saga import TASK_QUEUE
from orderflow.health import WorkerHealth, serving, worker_http_app
from orderflow.metrics import StepMetricsInterceptor
from orderflow.settings import Settings, WorkerSettings, database_url
from orderflow.store.db import Database
from orderflow.store.feed_ledger import AmazonFeedLedger
from orderflow.store.xref import CrossReferences
from orderflow.temporal import connect
from orderflow.workflows.amazon_orders import ChannelOrderPoller, ChannelOrderResync
from orderflow.workflows.channel_refund import ChannelRefund
from orderflow.workflows.order_to_cash import OrderToCash
from orderflow.workflows.return_to_refund import ReturnToRefund

# Activities run at once per worker by default (settings.worker.max_concurrent_activities).
MAX_CONCURRENT_ACTIVITIES = WorkerSettings().max_concurrent_activities


# Every workflow a worker runs; `orderflow replay` replays histories against exactly these.
WORKFLOWS: tuple[type, ...] = (OrderToCash, ReturnToRefund, ChannelRefund, ChannelOrderPoller, ChannelOrderResync)


def http_limits(max_concurrent_activities: int = MAX_CONCURRENT_ACTIVITIES) -> httpx.Limits:
    """The connection pool for a worker running this many activities at once."""
    # A connection per running activity, plus headroom for an adapter's read-back after a lost answer.
    return httpx.Limits(
        max_connections=max_concurrent_activities * 2, max_keepalive_connections=max_concurrent_activities
    )


HTTP_LIMITS = http_limits()


def http_client(tuning: WorkerSettings | None = None) -> httpx.AsyncClient:
    """The HTTP client every adapter of this worker shares (each call passes its own timeout)."""
    limits = http_limits(tuning.max_concurrent_activities) if tuning is not None else HTTP_LIMITS
    return httpx.AsyncClient(limits=limits)


def activities_for(
    settings: Settings,
    http: httpx.AsyncClient,
    *,
    database: Database | None = None,
    amazon: AmazonClient | None = None,
) -> list[Callable[..., Any]]:
    """Every activity of the sagas, on adapters built from `settings` over `http`; with a database, the view's too.

    `amazon` is the worker's one Amazon client, shared with the poller so one set of rate buckets,
    one token cache and one feed ledger stand for this worker.
    """
    netsuite = NetSuiteClient(http, settings.netsuite)
    wms = WmsClient(http, settings.wms)
    carrier = CarrierClient(http, settings.carrier)
    shopify = ShopifyClient(http, settings.shopify)
    # Accept reads the master-data cross-references first and caches what the ERP knows there.
    erp = ErpActivities(netsuite, xref=CrossReferences(database) if database is not None else None)
    warehouse = WarehouseActivities(wms)
    labels = CarrierActivities(carrier, wms)
    if amazon is None:
        ledger = AmazonFeedLedger(database) if database is not None else None
        amazon = AmazonClient(http, settings.amazon, ledger=ledger)
    channels = ChannelActivities({Channel.SHOPIFY: shopify, Channel.AMAZON: amazon})
    # Stock is shared: what any order reserves or gives back is published to Amazon's listings.
    availability = AvailabilityActivities(wms, {Channel.AMAZON: amazon})
    bookkeeping = [OrderViewActivities(database).record_order_view] if database is not None else []
    returns_channel = ReturnChannelActivities({Channel.SHOPIFY: shopify, Channel.AMAZON: amazon})
    returns_erp = ReturnErpActivities(netsuite)
    returns_warehouse = ReturnWarehouseActivities(wms)
    returns_carrier = ReturnCarrierActivities(carrier, wms)
    return [
        erp.accept_order,
        erp.check_credit,
        erp.post_sales_order,
        erp.close_sales_order,
        erp.record_fulfillment,
        erp.invoice_order,
        warehouse.allocate,
        warehouse.release_allocation,
        warehouse.release_to_warehouse,
        warehouse.cancel_fulfillment_order,
        # A partly shipped order cancelled: what has not shipped, in the warehouse and the ERP.
        warehouse.cancel_unshipped_lines,
        erp.close_unshipped_lines,
        labels.buy_label,
        labels.void_label,
        channels.confirm_shipment_on_channel,
        channels.cancel_on_channel,
        availability.publish_availability,
        *bookkeeping,
        # Return to refund.
        returns_channel.load_channel_order,
        returns_channel.approve_channel_return,
        returns_channel.send_return_label,
        returns_channel.close_channel_return,
        returns_channel.cancel_channel_return,
        returns_channel.refund_on_channel,
        returns_erp.load_erp_order_for_return,
        returns_erp.create_return_authorization,
        returns_erp.close_return_authorization,
        returns_erp.receive_return_in_erp,
        returns_erp.issue_return_credit,
        returns_warehouse.load_warehouse_order_for_return,
        returns_warehouse.create_wms_return,
        returns_warehouse.cancel_wms_return,
        returns_warehouse.restock_return,
        returns_carrier.buy_return_label,
        returns_carrier.void_return_label,
        # Refunds made on the channel, booked in the ERP.
        ChannelRefundActivities(netsuite).credit_invoice_for_refund,
    ]


def poller_activities(
    client: Client,
    settings: Settings,
    http: httpx.AsyncClient,
    *,
    task_queue: str = TASK_QUEUE,
    amazon: AmazonClient | None = None,
) -> list[Callable[..., Any]]:
    """The channel order poller's activities: Amazon's changed orders read, their sagas started or signalled."""
    amazon = amazon if amazon is not None else AmazonClient(http, settings.amazon)
    polling = ChannelPollingActivities(amazon, client, task_queue=task_queue)
    return [polling.list_channel_order_changes, polling.start_order_saga, polling.signal_cancel]


def build_worker(
    client: Client,
    settings: Settings,
    http: httpx.AsyncClient,
    *,
    task_queue: str = TASK_QUEUE,
    database: Database | None = None,
) -> Worker:
    """A worker for both sagas and their activities on `task_queue`; the order view in `database`.

    Its concurrency, sticky cache and stop grace are `settings.worker`. Without a database, the one in
    settings is used (its connections close with the process).
    With tracing on, `http` is instrumented: each adapter call becomes a span of its order's trace.
    """
    telemetry.instrument_http_client(
        http,
        systems={
            settings.netsuite.base_url: "netsuite",
            settings.wms.base_url: "wms",
            settings.carrier.base_url: "carrier",
            settings.shopify.base_url: "shopify",
            settings.amazon.base_url: "amazon",
            settings.amazon.lwa_url: "amazon",
        },
    )
    database = database or Database(database_url(settings))
    # Feeds carry no idempotency key: every worker finds the feeds sent under a key in one table.
    amazon = AmazonClient(http, settings.amazon, ledger=AmazonFeedLedger(database))
    tuning = settings.worker
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=[
            *activities_for(settings, http, database=database, amazon=amazon),
            # The Amazon order poller starts and signals sagas, so it needs this worker's Temporal client.
            *poller_activities(client, settings, http, task_queue=task_queue, amazon=amazon),
        ],
        max_concurrent_activities=tuning.max_concurrent_activities,
        max_concurrent_workflow_tasks=tuning.max_concurrent_workflow_tasks,
        # A saga's next task runs on the worker that has it cached; with the cache off (0) any worker
        # replays its history instead, and no task waits on a sticky queue.
        max_cached_workflows=tuning.max_cached_workflows,
        graceful_shutdown_timeout=tuning.graceful_shutdown,
        # Workflow and activity spans, continuing the trace the saga's start carried in its headers;
        # each step's latency and failures by system (orderflow/metrics.py).
        interceptors=[*telemetry.worker_interceptors(client), StepMetricsInterceptor()],
    )


async def run_worker(
    settings: Settings,
    *,
    client: Client | None = None,
    task_queue: str = TASK_QUEUE,
    stop: asyncio.Event | None = None,
    http_port: int = 0,
    runtime_metrics_bind: str | None = None,
) -> None:
    """Run a worker until `stop` is set (or forever), then let in-flight activities finish.

    With `http_port`, the worker serves `/healthz`, `/readyz` and `/metrics` there; the metrics are
    the Temporal runtime's (read from `runtime_metrics_bind`) and this process's.
    """
    if client is None:
        # Address, namespace, TLS and API key from Temporal's standard configuration (TEMPORAL_*).
        client = await connect(interceptors=telemetry.client_interceptors())
    database = Database(database_url(settings))
    try:
        # Accept reads the cross-references and every saga keeps its view here: refuse to start on
        # a database the code's migrations have not reached (the error says what to run).
        await database.require_migrated()
    except BaseException:
        await database.dispose()
        raise
    try:
        async with http_client(settings.worker) as http, contextlib.AsyncExitStack() as serving_http:
            worker = build_worker(client, settings, http, task_queue=task_queue, database=database)
            if http_port:
                health = WorkerHealth(database=database, client=client, runtime_metrics_bind=runtime_metrics_bind)
                health.worker = worker
                await serving_http.enter_async_context(
                    serving(worker_http_app(health), host=settings.worker_http_host, port=http_port)
                )
            if stop is None:
                await worker.run()
                return
            async with worker:
                await stop.wait()
    finally:
        await database.dispose()

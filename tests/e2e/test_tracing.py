"""One trace per order: a signed Shopify webhook, taken to COMPLETED, is one trace from the request to each vendor call.

Everything runs for real, as in the order-to-cash e2e test: the sandbox delivers a signed
`orders/create` to the webhook service (in-process, over HTTP), the relay dispatches it, the worker
(`run_worker`, as `orderflow worker` runs it) takes the saga to COMPLETED against the dev server,
and the WMS's `order.shipped` webhook signals the shipment. Tracing is on with an in-memory
exporter for this module only, so the rest of the suite runs untraced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from integration.test_shopify_contract import ORDER_CREATE, order_input
from opentelemetry import baggage, propagate
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from webhooks.conftest import shopify_hmac, shopify_order

from orderflow import telemetry
from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical.saga import OrderStatus, OrderToCashResult
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import (
    AmazonSettings,
    CarrierSettings,
    NetSuiteSettings,
    Settings,
    ShopifySettings,
    WmsSettings,
)
from orderflow.store import inbox as inbox_store
from orderflow.store.db import Database, upgrade
from orderflow.webhooks.app import SOURCES, create_app
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.webhooks.inbox import WebhookInbox
from orderflow.webhooks.relay import Relay
from orderflow.worker import run_worker

pytestmark = pytest.mark.integration

VENDORS = ("netsuite", "wms", "carrier", "shopify")
HTTPX_SCOPE = "opentelemetry.instrumentation.httpx"


class Recorder(logging.Handler):
    """Keeps the log records of the run, as a root handler would see them."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass(frozen=True)
class OrderRun:
    """One order taken to its end with tracing on: its key, result, activities run, spans and log records."""

    key: str
    result: OrderToCashResult
    activity_types: set[str]
    spans: list[ReadableSpan]
    records: list[logging.LogRecord]

    def trace_id(self) -> int:
        """The trace of the order's saga (the trace its workflow span is in)."""
        (run,) = [
            s for s in self.spans if s.name == "RunWorkflow:OrderToCash" and attr(s, "temporalWorkflowID") == self.key
        ]
        assert run.context is not None
        return run.context.trace_id

    def in_trace(self) -> list[ReadableSpan]:
        """Every span of the order's trace."""
        trace_id = self.trace_id()
        return [s for s in self.spans if s.context is not None and s.context.trace_id == trace_id]


def attr(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


def url_of(span: ReadableSpan) -> str:
    return str(attr(span, "url.full") or attr(span, "http.url") or "")


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this module, every span kept in memory; off again afterwards for the rest of the suite."""
    memory = InMemorySpanExporter()
    already = telemetry.tracing_enabled()  # a run with OTEL_* set: add to its provider, leave it on
    # Not as the process-wide provider: that would stay behind (it cannot be unset) and make FastAPI
    # trace every app of the later tests natively.
    provider = telemetry.configure_tracing(
        "orderflow-test", exporter=None if already else memory, global_provider=False
    )
    assert provider is not None
    if already:
        provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        yield memory
    finally:
        if not already:
            telemetry.shutdown_tracing()


async def saga(handle: WorkflowHandle[object, OrderToCashResult], timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await handle.describe()
            return
        except RPCError:
            if loop.time() > deadline:
                raise AssertionError(f"no saga {handle.id} was started") from None
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def order_run(
    exporter: InMemorySpanExporter,
    dev_server: WorkflowEnvironment,
    sandbox_server: BackgroundServer,
    m2m_key_file: Path,
    settings_database_url: str,
) -> AsyncIterator[OrderRun]:
    """One signed `orders/create` through the webhook service, the relay and the worker, to COMPLETED."""
    sandbox_url = sandbox_server.url
    settings = Settings(
        database_url=settings_database_url,
        shopify=ShopifySettings(base_url=f"{sandbox_url}/shopify", timeout_seconds=5),
        netsuite=NetSuiteSettings(base_url=f"{sandbox_url}/netsuite", private_key_file=m2m_key_file, timeout_seconds=5),
        wms=WmsSettings(base_url=f"{sandbox_url}/wms", timeout_seconds=5),
        carrier=CarrierSettings(base_url=f"{sandbox_url}/carrier", timeout_seconds=5),
        # Availability goes to Amazon after the reservation: its calls are the order's too.
        amazon=AmazonSettings(
            base_url=f"{sandbox_url}/amazon", lwa_url=f"{sandbox_url}/amazon/auth/o2/token", timeout_seconds=5
        ),
    )
    recorder = Recorder()
    root, webhooks_log = logging.getLogger(), logging.getLogger("orderflow.webhooks")
    root.addHandler(recorder)
    telemetry.install_log_correlation()
    level = webhooks_log.level
    webhooks_log.setLevel(logging.INFO)
    queue = f"tracing-{uuid.uuid4()}"
    target = dev_server.client.service_client.config.target_host
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=sandbox_url, timeout=10) as sandbox, httpx.AsyncClient() as http:
            (await sandbox.post("/sandbox/reset")).raise_for_status()
            with BackgroundServer(create_app(settings, temporal=TemporalGateway(target, task_queue=queue))) as hooks:
                for system, topics in {"shopify": ["orders/create"], "wms": ["order.shipped"]}.items():
                    subscription = {"topics": topics, "url": f"{hooks.url}/webhooks/{system}"}
                    (
                        await sandbox.post(f"/sandbox/webhooks/subscriptions/{system}", json=subscription)
                    ).raise_for_status()
                (await sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": 0.3})).raise_for_status()
                worker = asyncio.create_task(
                    run_worker(settings, client=dev_server.client, task_queue=queue, stop=stop)
                )
                try:
                    # Placed with a client of the test's own (untraced): the trace starts at the webhook.
                    shop = ShopifyClient(http, settings.shopify)
                    created = (await shop.execute(ORDER_CREATE, {"order": order_input([("BOLT-M8-S", 2)])}))[
                        "orderCreate"
                    ]
                    assert created["userErrors"] == [], created["userErrors"]
                    key = f"order:shopify:{created['order']['legacyResourceId']}"
                    handle: WorkflowHandle[object, OrderToCashResult] = dev_server.client.get_workflow_handle(
                        key, result_type=OrderToCashResult
                    )
                    await saga(handle)
                    result = await asyncio.wait_for(handle.result(), 30)
                    activity_types = {
                        event.activity_task_scheduled_event_attributes.activity_type.name
                        async for event in handle.fetch_history_events()
                        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                    }
                finally:
                    stop.set()
                    await asyncio.wait_for(worker, 20)
        yield OrderRun(key, result, activity_types, list(exporter.get_finished_spans()), list(recorder.records))
    finally:
        webhooks_log.setLevel(level)
        root.removeHandler(recorder)


async def test_one_signed_webhook_is_one_trace_from_the_request_to_every_vendor_call(order_run: OrderRun) -> None:
    assert order_run.result.status is OrderStatus.COMPLETED, order_run.result.state.model_dump_json()
    spans = order_run.in_trace()
    names = [s.name for s in spans]

    # The webhook request is the root; the relay's dispatch continues it (a child, linked to it).
    (ingress,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "POST /webhooks/shopify"]
    assert ingress.parent is None
    (dispatch,) = [s for s in spans if s.name == "inbox dispatch shopify orders/create"]
    assert dispatch.parent is not None and dispatch.parent.span_id == ingress.context.span_id  # type: ignore[union-attr]
    assert [link.context.span_id for link in dispatch.links] == [ingress.context.span_id]  # type: ignore[union-attr]
    assert "StartWorkflow:OrderToCash" in names and "RunWorkflow:OrderToCash" in names
    # The warehouse's shipment webhook is its own request, but the signal lands in the order's trace.
    assert "HandleSignal:shipment_confirmed" in names

    # Each activity the saga ran, and each adapter call below it.
    ran = {name.removeprefix("RunActivity:") for name in names if name.startswith("RunActivity:")}
    assert order_run.activity_types and order_run.activity_types <= ran, order_run.activity_types - ran
    calls = [s for s in spans if s.kind is SpanKind.CLIENT and s.instrumentation_scope.name == HTTPX_SCOPE]  # type: ignore[union-attr]
    assert set(VENDORS) <= {attr(s, "orderflow.system") for s in calls}, [(s.name, url_of(s)) for s in calls]
    # Each call is named by the system it went to, which its URL confirms.
    for call in calls:
        assert call.name.endswith(f" {attr(call, 'orderflow.system')}"), call.name
        assert f"/{attr(call, 'orderflow.system')}/" in url_of(call), (call.name, url_of(call))
    # No span of the saga's own (its workflow's and activities') strayed into another trace. (The
    # shipment webhook's SignalWorkflow is that request's span: the signal's handling links to it.)
    own = ("RunWorkflow:", "StartActivity:", "RunActivity:", "HandleSignal:", "CompleteWorkflow:")
    saga_spans = [
        s for s in order_run.spans if attr(s, "temporalWorkflowID") == order_run.key and s.name.startswith(own)
    ]
    assert {s.context.trace_id for s in saga_spans if s.context} == {order_run.trace_id()}


async def test_every_span_below_the_request_carries_the_order_key_channel_and_workflow_id(order_run: OrderRun) -> None:
    below = [s for s in order_run.in_trace() if s.parent is not None]
    assert len(below) > 20, [s.name for s in below]
    unnamed = [
        (s.name, dict(s.attributes or {}))
        for s in below
        if (attr(s, "orderflow.order_key"), attr(s, "orderflow.channel"), attr(s, "temporal.workflow_id"))
        != (order_run.key, "shopify", order_run.key)
    ]
    assert unnamed == []


async def test_a_vendor_call_carries_the_trace_but_not_the_order_baggage(exporter: InMemorySpanExporter) -> None:
    # What an adapter's instrumented client sends along: the order's attributes stay orderflow's.
    with telemetry.tracer().start_as_current_span("adapter call"), telemetry.order_context(order_key="order:shopify:1"):
        headers: dict[str, str] = {}
        propagate.inject(headers)
        assert baggage.get_baggage("orderflow.order_key") == "order:shopify:1"
    assert set(headers) == {"traceparent"}


async def test_the_webhook_request_span_names_the_order(order_run: OrderRun) -> None:
    (ingress,) = [s for s in order_run.in_trace() if s.kind is SpanKind.SERVER and s.parent is None]
    assert attr(ingress, "orderflow.order_key") == order_run.key
    assert attr(ingress, "orderflow.channel") == "shopify"


async def test_the_log_lines_of_the_dispatch_carry_the_order_trace_id(order_run: OrderRun) -> None:
    started = [r for r in order_run.records if order_run.key in r.getMessage() and "orders/create" in r.getMessage()]
    assert started, [r.getMessage() for r in order_run.records]
    assert {getattr(r, "trace_id", None) for r in started} == {format(order_run.trace_id(), "032x")}


async def test_a_webhook_dispatched_late_by_another_replica_continues_the_trace_of_its_request(
    exporter: InMemorySpanExporter, dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    # The request is stored while no relay runs; a relay of a fresh inbox (another replica, or this
    # one restarted: nothing mapped in memory) dispatches it later from the row alone.
    url = f"sqlite:///{tmp_path / 'inbox.db'}"
    upgrade(url)
    database = Database(url)
    settings = Settings(database_url=url)
    queue = f"tracing-late-{uuid.uuid4()}"
    target = dev_server.client.service_client.config.target_host
    order_id = str(9_300_000_000_000 + uuid.uuid4().int % 10**12)
    raw = json.dumps(shopify_order(order_id)).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": shopify_hmac(raw, settings.shopify.client_secret.get_secret_value()),
        "X-Shopify-Shop-Domain": settings.shopify.shop_domain,
        "X-Shopify-Event-Id": str(uuid.uuid4()),
    }
    key = f"order:shopify:{order_id}"
    try:
        app = create_app(settings, temporal=TemporalGateway(target, task_queue=queue), database=database, relay=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks") as hooks:
            answer = await hooks.post("/webhooks/shopify", content=raw, headers=headers)
        assert answer.json()["status"] == "accepted", answer.text
        (row,) = await inbox_store.listing(database)
        assert row.traceparent is not None

        await asyncio.sleep(0.3)
        later = WebhookInbox(
            database=database, settings=settings, temporal=TemporalGateway(target, task_queue=queue), sources=SOURCES
        )
        assert (await Relay(later, grace=timedelta(0)).run_once()).dispatched == 1
        await dev_server.client.get_workflow_handle(key).terminate("tracing test finished")
    finally:
        await database.dispose()

    spans = list(exporter.get_finished_spans())
    (ingress,) = [
        s
        for s in spans
        if s.name == "POST /webhooks/shopify" and s.context and f"{s.context.trace_id:032x}" in row.traceparent
    ]
    assert ingress.context is not None
    (dispatch,) = [
        s
        for s in spans
        if s.name == "inbox dispatch shopify orders/create"
        and attr(s, "orderflow.inbox.id") == row.id
        and s.context
        and s.context.trace_id == ingress.context.trace_id
    ]
    assert dispatch.parent is not None and dispatch.parent.span_id == ingress.context.span_id
    assert int(attr(dispatch, "orderflow.inbox.waited_ms") or 0) >= 300
    (start,) = [s for s in spans if s.name == "StartWorkflow:OrderToCash" and attr(s, "temporalWorkflowID") == key]
    assert start.context is not None and start.context.trace_id == ingress.context.trace_id
    assert start.parent is not None and start.parent.span_id == dispatch.context.span_id  # type: ignore[union-attr]
    assert attr(start, "orderflow.order_key") == key

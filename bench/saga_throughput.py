"""Order-to-cash throughput against a bare workflow of as many no-op steps, on one dev server and one worker.

    .venv/bin/python bench/saga_throughput.py [--orders 100]

Prints JSON (no assertions): orders/s for the saga and for the bare workflow, their ratio, history
events per order for each, webhook-to-ERP-posting p50/p95, N and the core count. See bench/README.md.

The saga runs the way production runs it: each order is created on the sandbox Shopify with
`orderCreate`, whose signed `orders/create` webhook reaches the webhook service, which starts the
saga (so `received_at_epoch_ms` is the webhook's arrival); the sandbox WMS ships each released order
at once (demo mode, 0 s) and its `order.shipped` webhook reaches the saga through the webhook service.
Everything (sandbox, webhook service, worker, driver) shares this one process, as the issue asks.
"""

from __future__ import annotations

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import argparse
    import asyncio
    import contextlib
    import json
    import os
    import sys
    import tempfile
    import time
    import uuid
    from collections import Counter
    from collections.abc import Iterator
    from datetime import timedelta
    from pathlib import Path
    from typing import Any

    import httpx
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client, WorkflowHandle
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.service import RPCError, RPCStatusCode
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from orderflow.adapters.shopify import ShopifyClient
    from orderflow.canonical import Channel
    from orderflow.canonical.order import order_key
    from orderflow.canonical.saga import OrderStatus, OrderToCashResult, SagaStep
    from orderflow.cli.demo import (
        ORDER_CREATE,
        free_stock,
        order_variables,
        percentile,
        plan_d2c_orders,
        webhook_to_erp_ms,
    )
    from orderflow.devstack import venv_binary
    from orderflow.sandbox import SandboxConfig, create_app
    from orderflow.sandbox import carrier as carrier_simulator
    from orderflow.sandbox.credentials import ensure_m2m_keypair, public_key_path
    from orderflow.sandbox.server import BackgroundServer
    from orderflow.settings import CarrierSettings, NetSuiteSettings, Settings, ShopifySettings, WmsSettings
    from orderflow.store.db import upgrade
    from orderflow.temporal import SEARCH_ATTRIBUTE_KEYS
    from orderflow.webhooks.app import create_app as create_webhook_app
    from orderflow.webhooks.dispatch import TemporalGateway
    from orderflow.worker import MAX_CONCURRENT_ACTIVITIES, build_worker

# The naive design: one activity per step of the saga's table (DESIGN.md §4), nothing else.
BARE_STEPS = [step.value for step in SagaStep]
# Orders placed at once; the Shopify sandbox answers each orderCreate in a few milliseconds.
PLACING_CONCURRENCY = 20


@activity.defn(name="bench_noop_step")
async def noop_step(step: str) -> str:
    """A step that does nothing, so the bare workflow measures only Temporal's own cost per step."""
    return step


@workflow.defn(name="BareOrderSteps")
class BareOrderSteps:
    """The same number of steps as the saga, each a no-op activity, one after the other."""

    @workflow.run
    async def run(self, steps: list[str]) -> int:
        """Run every step as an activity; returns how many ran."""
        for step in steps:
            await workflow.execute_activity(noop_step, step, start_to_close_timeout=timedelta(seconds=30))
        return len(steps)


def sandbox_config(key_file: Path, *, vendor_quotas: bool) -> SandboxConfig:
    """The sandbox without faults or latency; unless `vendor_quotas`, with the vendors' rate limits lifted.

    The limits (Shopify's cost bucket, the WMS's 150 requests a minute, EasyPost's 5 index calls a
    second) are real behaviour, but at 100 orders in a burst they measure the vendors' quotas, not
    orderflow. `--vendor-quotas` keeps them, to show what they cost.
    """
    if vendor_quotas:
        return SandboxConfig(
            netsuite_public_key_file=public_key_path(key_file), webhook_time_scale=0.0005, tick_seconds=0.02
        )
    # EasyPost's index limit is a constant of the simulator, not configuration.
    carrier_simulator.INDEX_REQUESTS_PER_SECOND = 1_000_000
    return SandboxConfig(
        netsuite_public_key_file=public_key_path(key_file),
        webhook_time_scale=0.0005,
        tick_seconds=0.02,
        shopify_bucket_size=1_000_000,
        shopify_restore_rate=1_000_000,
        wms_requests_per_minute=1_000_000,
    )


def settings_for(sandbox_url: str, key_file: Path) -> Settings:
    """Every adapter pointed at the in-process sandbox."""
    # The inbox and the order view live in a fresh SQLite file beside the key, migrated like production.
    database = f"sqlite:///{key_file.parent / 'orderflow.db'}"
    upgrade(database)
    return Settings(
        database_url=database,
        shopify=ShopifySettings(base_url=f"{sandbox_url}/shopify"),
        netsuite=NetSuiteSettings(base_url=f"{sandbox_url}/netsuite", private_key_file=key_file),
        wms=WmsSettings(base_url=f"{sandbox_url}/wms"),
        carrier=CarrierSettings(base_url=f"{sandbox_url}/carrier"),
    )


async def history_events(client: Client, workflow_id: str) -> int:
    """How many events the workflow's history holds."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events)


async def event_breakdown(client: Client, workflow_id: str) -> dict[str, int]:
    """One history's events by type, most frequent first: where a lean history would save."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    counts = Counter(EventType.Name(event.event_type).removeprefix("EVENT_TYPE_") for event in history.events)
    return dict(counts.most_common())


async def saga_result(handle: WorkflowHandle[Any, OrderToCashResult]) -> OrderToCashResult:
    """The saga's result, once the webhook service has started it."""
    while True:
        try:
            return await handle.result()
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.05)


async def run_sagas(client: Client, settings: Settings, sandbox: httpx.AsyncClient, orders: int) -> dict[str, Any]:
    """N orders through Shopify's webhooks to COMPLETED; throughput, history size and latency."""
    plan = plan_d2c_orders(orders, free_stock((await sandbox.get("/sandbox/state/wms")).json()))
    gate = asyncio.Semaphore(PLACING_CONCURRENCY)
    async with httpx.AsyncClient() as http:
        shopify = ShopifyClient(http, settings.shopify)

        async def one(index: int) -> tuple[str, OrderToCashResult]:
            async with gate:
                created = (await shopify.execute(ORDER_CREATE, order_variables(plan[index])))["orderCreate"]
            key = order_key(Channel.SHOPIFY, str(created["order"]["legacyResourceId"]))
            return key, await saga_result(client.get_workflow_handle(key, result_type=OrderToCashResult))

        started, cpu = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(one(i) for i in range(orders)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    statuses = {str(status): sum(1 for _, r in results if r.status is status) for status in OrderStatus}
    events = [await history_events(client, key) for key, _ in results]
    latencies = [ms for ms in (webhook_to_erp_ms(r.state) for _, r in results) if ms is not None]
    return {
        "seconds": round(elapsed, 3),
        "orders_per_second": round(orders / elapsed, 3),
        "final_statuses": {k: v for k, v in statuses.items() if v},
        # This process: the worker, the sandbox and webhook service threads, the driver (not the server).
        "process_cpu_ms_per_order": round(cpu * 1000 / orders, 1),
        "history_events_per_order": round(sum(events) / len(events), 1),
        "history_of_one_order": await event_breakdown(client, results[0][0]),
        "webhook_to_erp_ms": {
            "p50": round(percentile(latencies, 50), 1) if latencies else None,
            "p95": round(percentile(latencies, 95), 1) if latencies else None,
        },
    }


async def run_bare(client: Client, orders: int) -> dict[str, Any]:
    """N bare workflows of as many no-op activity steps; throughput and history size."""
    task_queue = f"bench-bare-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BareOrderSteps],
        activities=[noop_step],
        max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
    ):
        started, cpu = time.perf_counter(), time.process_time()
        handles = await asyncio.gather(
            *(
                client.start_workflow(
                    BareOrderSteps.run, BARE_STEPS, id=f"bare-{task_queue}-{i}", task_queue=task_queue
                )
                for i in range(orders)
            )
        )
        await asyncio.gather(*(h.result() for h in handles))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    events = [await history_events(client, h.id) for h in handles]
    return {
        "seconds": round(elapsed, 3),
        "orders_per_second": round(orders / elapsed, 3),
        "steps": len(BARE_STEPS),
        "process_cpu_ms_per_order": round(cpu * 1000 / orders, 1),
        "history_events_per_order": round(sum(events) / len(events), 1),
        "history_of_one_order": await event_breakdown(client, handles[0].id),
    }


@contextlib.contextmanager
def child_output_to_stderr() -> Iterator[None]:
    """Send what a child process prints (the dev server's banner) to stderr, so stdout stays pure JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def main(orders: int, *, vendor_quotas: bool = False) -> dict[str, Any]:
    """Start the dev server, the sandbox, the webhook service and one worker; measure both workloads."""
    with child_output_to_stderr():
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=venv_binary("temporal"),
            search_attributes=SEARCH_ATTRIBUTE_KEYS,
            data_converter=pydantic_data_converter,
            dev_server_log_level="error",
        )
    try:
        client = env.client
        with tempfile.TemporaryDirectory() as tmp:
            key_file = Path(tmp) / "netsuite-m2m-key.pem"
            ensure_m2m_keypair(key_file)
            task_queue = f"bench-saga-{uuid.uuid4()}"
            gateway = TemporalGateway(client.service_client.config.target_host, client.namespace, task_queue=task_queue)
            with BackgroundServer(create_app(sandbox_config(key_file, vendor_quotas=vendor_quotas))) as sandbox_server:
                settings = settings_for(sandbox_server.url, key_file)
                with BackgroundServer(create_webhook_app(settings, temporal=gateway)) as webhooks:
                    async with (
                        httpx.AsyncClient(base_url=sandbox_server.url, timeout=10) as sandbox,
                        httpx.AsyncClient() as http,
                    ):
                        for system in ("shopify", "wms", "carrier"):
                            url = f"{webhooks.url}/webhooks/{system}"
                            subscribed = await sandbox.post(
                                f"/sandbox/webhooks/subscriptions/{system}", json={"topics": ["*"], "url": url}
                            )
                            subscribed.raise_for_status()
                        (await sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": 0})).raise_for_status()
                        async with build_worker(client, settings, http, task_queue=task_queue):
                            saga = await run_sagas(client, settings, sandbox, orders)
            bare = await run_bare(client, orders)
    finally:
        await env.shutdown()
    return {
        "orders": orders,
        "cores": os.cpu_count(),
        "vendor_quotas": vendor_quotas,
        "saga": saga,
        "bare": bare,
        "ratio_saga_to_bare": round(saga["orders_per_second"] / bare["orders_per_second"], 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100, help="sagas (and bare workflows) to run")
    parser.add_argument(
        "--vendor-quotas", action="store_true", help="keep the sandbox vendors' rate limits (they cap the saga)"
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.orders, vendor_quotas=args.vendor_quotas)), indent=2))

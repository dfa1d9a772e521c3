"""`/healthz`, `/readyz` and `/metrics` of the worker and the webhook service, against real parts.

Readiness is asked of a real database (SQLite and PostgreSQL, migrated or not) and the real
Temporal dev server (or an address nobody listens on); the worker's endpoints are served over
real HTTP next to a running worker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from support.temporal import free_port
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from orderflow.health import WorkerHealth, readiness, serving, webhook_health_router, worker_http_app
from orderflow.metrics import WebhookMetrics, worker_runtime
from orderflow.store import inbox
from orderflow.store.db import Database
from orderflow.webhooks.dispatch import TemporalGateway


def families(text: str) -> set[str]:
    """The metric names in a Prometheus text."""
    return {family.name for family in text_string_to_metric_families(text)}


@pytest.fixture
async def unmigrated(tmp_path: Path) -> AsyncIterator[Database]:
    """An empty SQLite file: reachable, never migrated."""
    path = tmp_path / "empty.db"
    path.touch()
    db = Database(f"sqlite:///{path}")
    try:
        yield db
    finally:
        await db.dispose()


def nobody_listens() -> TemporalGateway:
    """A gateway to a loopback port with no Temporal behind it."""
    return TemporalGateway(f"127.0.0.1:{free_port()}", "default")


def webhook_app(database: Database, gateway: TemporalGateway, metrics: WebhookMetrics | None = None) -> FastAPI:
    """The webhook service's operational routes, mounted as the service mounts them."""
    app = FastAPI()
    app.include_router(webhook_health_router(database, gateway, metrics or WebhookMetrics(database)))
    return app


async def get(app: FastAPI, path: str) -> httpx.Response:
    """One request to an app through the ASGI transport."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as http:
        return await http.get(path)


async def test_the_webhook_service_is_ready_with_a_migrated_database_and_temporal(
    database: Database, dev_server: WorkflowEnvironment
) -> None:
    gateway = TemporalGateway(client=dev_server.client)
    assert await readiness(database, gateway) == (True, {"database": "ok", "migrations": "ok", "temporal": "ok"})

    response = await get(webhook_app(database, gateway), "/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": "ok", "migrations": "ok", "temporal": "ok"}}


async def test_an_unmigrated_database_is_not_ready_and_says_what_to_run(
    unmigrated: Database, dev_server: WorkflowEnvironment
) -> None:
    response = await get(webhook_app(unmigrated, TemporalGateway(client=dev_server.client)), "/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["temporal"] == "ok"
    assert "at migration none" in checks["migrations"]
    assert "orderflow db upgrade" in checks["migrations"]


async def test_temporal_nobody_listens_on_is_not_ready_with_the_address(database: Database) -> None:
    gateway = nobody_listens()
    response = await get(webhook_app(database, gateway), "/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok" and checks["migrations"] == "ok"
    assert gateway.address in checks["temporal"]
    assert checks["temporal"] != "ok"


async def test_an_unreachable_database_is_not_ready(dev_server: WorkflowEnvironment) -> None:
    gone = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    try:
        ready, checks = await readiness(gone, TemporalGateway(client=dev_server.client))
    finally:
        await gone.dispose()
    assert not ready
    assert checks["database"].startswith("unreachable: ")
    assert checks["migrations"].startswith("unknown")


async def test_the_webhook_services_metrics_show_requests_and_the_inbox_backlog(database: Database) -> None:
    metrics = WebhookMetrics(database)
    metrics.webhook_request("shopify", "orders/create", "accepted")
    await inbox.receive(database, source="shopify", event_id="e1", topic="orders/create", headers={}, body=b"{}")

    response = await get(webhook_app(database, nobody_listens(), metrics), "/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, s.labels.get("source"), s.labels.get("outcome")): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("orderflow_webhook_requests_total", "shopify", "accepted")] == 1
    assert samples[("orderflow_inbox_backlog", "shopify", None)] == 1
    assert samples[("orderflow_inbox_backlog_read_ok", None, None)] == 1


@activity.defn(name="health_noop")
async def noop() -> None:
    """Nothing: a worker needs something to poll for."""


async def test_the_worker_serves_liveness_readiness_and_metrics_over_http(
    database: Database, dev_server: WorkflowEnvironment
) -> None:
    bind = f"127.0.0.1:{free_port()}"
    client = await Client.connect(
        dev_server.client.service_client.config.target_host,
        namespace=dev_server.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=worker_runtime(bind),
    )
    health = WorkerHealth(database=database, client=client, runtime_metrics_bind=bind)
    port = free_port()
    async with (
        serving(worker_http_app(health), host="127.0.0.1", port=port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
    ):
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        before = await http.get("/readyz")
        assert before.status_code == 503
        assert before.json()["checks"]["worker"] == "the worker is not polling yet"

        worker = Worker(client, task_queue=f"health-{uuid.uuid4()}", activities=[noop])
        health.worker = worker
        async with worker:
            running = await http.get("/readyz")
            assert running.status_code == 200, running.json()
            assert running.json()["checks"] == {"database": "ok", "migrations": "ok", "temporal": "ok", "worker": "ok"}

            scraped = await http.get("/metrics")
            assert scraped.status_code == 200
            names = families(scraped.text)
            # The Temporal runtime's SDK metrics and this process's own, in one scrape.
            assert "temporal_worker_start" in names
            assert "process_cpu_seconds" in names

        after = await http.get("/readyz")
        assert after.status_code == 503
        assert after.json()["checks"]["worker"] != "ok"
